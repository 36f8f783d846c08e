"""The runtime of agent calls: their tasks, their branches, single flight and the cache.

- ``_call.py``: a call's lifecycle (its tasks, cancellation, nesting) and :func:`start`;
- ``_writer.py``: a call's branch, placed in order in the store;
- ``_flight.py``: calls through the cache (replay, single flight);
- ``_interaction.py``: :class:`InteractionContext`, what an agent function receives;
- ``_state.py``: the record a running forum hands its calls, and its statistics.
"""

from ._call import Call as Call
from ._call import sequence as sequence
from ._call import start as start
from ._interaction import InteractionContext as InteractionContext
from ._interaction import branch_of as branch_of
from ._state import ForumState as ForumState
from ._state import ForumStatistics as ForumStatistics
from ._writer import error_type_of as error_type_of
