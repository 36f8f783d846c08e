"""The exceptions of agentforum.

Every error the library raises on purpose derives from :class:`AgentForumError`::

    AgentForumError
    ├── ForumNotRunningError    a call was started while its forum is not running
    ├── MessageNotFoundError    no message has this hash (or hash prefix)
    ├── AmbiguousHashError      a hash prefix names more than one message
    ├── EmptySequenceError      ``await seq.last()`` on a sequence without messages
    ├── IntegrityError          stored data was altered (a message, a cache entry)
    ├── StoreError              a store cannot be opened or written (not ours, full, ...)
    ├── RefConflictError        a ref is not where a compare-and-set expected it
    ├── NonFastForwardError     a push or pull would move a ref off its branch
    └── AgentError              an agent raised; ``.message`` is the recorded ErrorMessage
        └── AgentCancelled      the call was cancelled

Bad arguments raise the built-in :class:`TypeError` and :class:`ValueError`, and closed
calls raise :class:`anyio.ClosedResourceError`, as elsewhere in the AnyIO ecosystem.

One warning category reports what the library worked around rather than raised::

    UserWarning
    └── IntegrityWarning        the store's cache index disagrees with the tree
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._messages import ErrorMessage


class AgentForumError(Exception):
    """Base class of every error that agentforum raises on purpose."""


class ForumNotRunningError(AgentForumError, RuntimeError):
    """An agent was called while its forum is not running.

    Calls run in the forum's task group, which exists only inside ``async with forum:``.
    """


class MessageNotFoundError(AgentForumError, LookupError):
    """No message in the store has this hash, or starts with this hash prefix."""


class AmbiguousHashError(AgentForumError, LookupError):
    """A hash prefix matches more than one message; give more characters."""


class EmptySequenceError(AgentForumError, LookupError):
    """``await seq.last()`` was used on a :class:`MessageSequence` that holds no message."""


class IntegrityError(AgentForumError):
    """Stored data was altered: a message's fields do not hash to the hash it is stored
    under, or an entry of the cache index is not a list of hashes."""


class IntegrityWarning(UserWarning):
    """A call's cache entry is wrong: not the call's own branch of stored, sound responses.

    The call is answered as if it were not cached (its agent runs, and the fresh answer
    replaces the entry), and this warning names the call and what is wrong: run
    ``agentforum fsck`` (or :meth:`MessageStore.verify`) to check the whole store. Where
    warnings are errors, the call ends with this one instead (its agent does not run).
    """


class StoreError(AgentForumError):
    """A store cannot be opened or used: a missing file, or one that is not an agentforum
    database (or is one of a newer schema than this version of agentforum reads), a
    damaged one, a full disk, a database that can be read but not written here."""


class RefConflictError(AgentForumError):
    """A compare-and-set of a ref found the ref somewhere else than it expected.

    Raised by ``set_ref(name, hash, expected=...)`` (of :class:`Forum` and of every
    :class:`MessageStore`) when the ref ``name`` does not point at ``expected`` (or exists,
    when ``expected`` is ``None``): another writer moved or created it meanwhile. The ref is
    left as that writer left it. Read it again, decide, and retry.
    """

    def __init__(self, name: str, expected: str | None, actual: str | None) -> None:
        def where(hash: str | None) -> str:
            return "does not exist" if hash is None else f"points at {hash}"

        wanted = "not to exist" if expected is None else f"to point at {expected}"
        super().__init__(
            f"ref {name!r} was expected {wanted}, but it {where(actual)}: another writer "
            "moved it; read it again and retry"
        )
        #: The ref's name.
        self.name: str = name
        #: The hash the ref was expected to point at (``None``: expected not to exist).
        self.expected: str | None = expected
        #: The hash the ref points at (``None``: it does not exist).
        self.actual: str | None = actual

    def __reduce__(self) -> tuple[type[RefConflictError], tuple[str, str | None, str | None]]:
        return type(self), (self.name, self.expected, self.actual)


class NonFastForwardError(AgentForumError):
    """A push or pull would move a ref somewhere that does not descend from where it is.

    Refs move forward only: a sync moves a ref of the destination to the source's message
    when that message descends from the one the ref points at (its branch holds it), and
    otherwise refuses, raising this error, unless ``force`` is given. The destination's
    branch then holds messages the source's lacks, which moving the ref would leave
    behind. Nothing was written when the check was made before sending (a ref that was
    already off the source's branch); when another writer moved the ref off it while the
    sync ran, the messages were sent and the refs named before it were moved.
    """

    def __init__(self, refused: tuple[tuple[str, str, str], ...]) -> None:
        names = ", ".join(
            f"{name!r} ({old[:10]} is not on the branch of {new[:10]})"
            for name, old, new in refused
        )
        many = len(refused) != 1
        holds = (
            "branches hold messages that the source's lack"
            if many
            else ("branch holds messages that the source's lacks")
        )
        super().__init__(
            f"ref{'s' if many else ''} {names} would not move forward: the destination's "
            f"{holds}; bring them to the source first (pull), or force the move "
            "(force=True, --force), which leaves them behind"
        )
        #: The refs refused: name, where it points in the destination, where it would move.
        self.refused: tuple[tuple[str, str, str], ...] = refused

    def __reduce__(
        self,
    ) -> tuple[type[NonFastForwardError], tuple[tuple[tuple[str, str, str], ...]]]:
        return type(self), (self.refused,)


class AgentError(AgentForumError):
    """An agent raised an exception; its branch ends with :attr:`message`.

    Raised to every consumer that reaches the :class:`ErrorMessage` at the end of a branch.
    ``__cause__`` is the original exception when the agent ran in this process. When the
    store failed to record the ErrorMessage, it is in no store, and the forum raises the
    store's error when it exits.
    """

    def __init__(self, message: ErrorMessage) -> None:
        super().__init__(message)
        #: The :class:`ErrorMessage` recorded in the message tree.
        self.message: ErrorMessage = message

    def __str__(self) -> str:
        message = self.message
        text = f"{message.error_type}: {message.content}" if message.content else message.error_type
        return f"agent {message.sender!r} failed: {text}"


class AgentCancelled(AgentError):
    """The call was cancelled before it finished."""
