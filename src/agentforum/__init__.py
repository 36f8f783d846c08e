"""agentforum: multi-agent systems as git-like trees of immutable messages."""

import importlib.metadata as _metadata

from ._agents import Agent as Agent
from ._agents import AgentCall as AgentCall
from ._agents import AgentFunction as AgentFunction
from ._exceptions import AgentCancelled as AgentCancelled
from ._exceptions import AgentError as AgentError
from ._exceptions import AgentForumError as AgentForumError
from ._exceptions import AmbiguousHashError as AmbiguousHashError
from ._exceptions import EmptySequenceError as EmptySequenceError
from ._exceptions import ForumNotRunningError as ForumNotRunningError
from ._exceptions import IntegrityError as IntegrityError
from ._exceptions import IntegrityWarning as IntegrityWarning
from ._exceptions import MessageNotFoundError as MessageNotFoundError
from ._exceptions import NonFastForwardError as NonFastForwardError
from ._exceptions import RefConflictError as RefConflictError
from ._exceptions import StoreError as StoreError
from ._forum import Forum as Forum
from ._hashing import hash_content as hash_content
from ._json import FrozenDict as FrozenDict
from ._json import JSONValue as JSONValue
from ._messages import CallMessage as CallMessage
from ._messages import ErrorMessage as ErrorMessage
from ._messages import ForwardedMessage as ForwardedMessage
from ._messages import Message as Message
from ._messages import decode_message as decode_message
from ._messages import encode_message as encode_message
from ._promises import MessagePromise as MessagePromise
from ._promises import MessageSequence as MessageSequence
from ._promises import StreamedMessage as StreamedMessage
from ._public import claim
from ._runtime import ForumStatistics as ForumStatistics
from ._runtime import InteractionContext as InteractionContext
from ._stores._garbage import GarbageReport as GarbageReport
from ._stores._memory import MemoryStore as MemoryStore
from ._stores._postgres import PostgresStore as PostgresStore
from ._stores._protocol import Claim as Claim
from ._stores._protocol import ClaimingStore as ClaimingStore
from ._stores._protocol import IntegrityProblem as IntegrityProblem
from ._stores._protocol import MessageStore as MessageStore
from ._stores._sqlite import SQLiteStore as SQLiteStore
from ._sync import RefUpdate as RefUpdate
from ._sync import SyncReport as SyncReport

__all__ = (
    "Agent",
    "AgentCall",
    "AgentCancelled",
    "AgentError",
    "AgentForumError",
    "AgentFunction",
    "AmbiguousHashError",
    "CallMessage",
    "Claim",
    "ClaimingStore",
    "EmptySequenceError",
    "ErrorMessage",
    "Forum",
    "ForumNotRunningError",
    "ForumStatistics",
    "ForwardedMessage",
    "FrozenDict",
    "GarbageReport",
    "IntegrityError",
    "IntegrityProblem",
    "IntegrityWarning",
    "InteractionContext",
    "JSONValue",
    "MemoryStore",
    "Message",
    "MessageNotFoundError",
    "MessagePromise",
    "MessageSequence",
    "MessageStore",
    "NonFastForwardError",
    "PostgresStore",
    "RefConflictError",
    "RefUpdate",
    "SQLiteStore",
    "StoreError",
    "StreamedMessage",
    "SyncReport",
    "decode_message",
    "encode_message",
    "hash_content",
)

try:
    __version__: str = _metadata.version("agentforum")
    """The version of the installed distribution, as ``pip show agentforum`` gives it
    (``"0+unknown"`` for a source tree imported without being installed). Not in
    ``__all__``, as in trio and anyio."""
except _metadata.PackageNotFoundError:
    __version__ = "0+unknown"

claim(globals(), __all__)
del claim, _metadata
