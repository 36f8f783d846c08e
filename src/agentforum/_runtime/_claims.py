"""Single flight across processes: a claim on a call in flight, held by the one that runs it.

Within a forum, identical calls in flight follow one leader (``_flight.py``). Across the
processes (and machines) that share a store, the store holds *claims*
(:class:`ClaimingStore`): a call that misses the cache, and has no leader in its forum,
claims its key (the CallMessage hash) before it runs the agent. Then:

- it gets the claim: it reads the cache again if the claim says the call has an answer
  (another process answered between the miss and the claim), and leads. A task of the
  forum's renews the claim every ``heartbeat`` seconds while the call runs. Recording the
  answer in the cache index releases the claim; a call that ends without recording one
  (it failed, or was cancelled) has the task release it once the call has ended.
- another process holds it: the call waits until the claim is released (woken by the
  store, or by the lease running out: the holder died), reads the cache, and replays the
  answer found there, as a hit does; if there is none (the holder failed, or died), it
  claims the call again, and runs it itself if it gets the claim.

The call is in its forum's flights all along, so that identical calls of its forum follow
it: they replay or run with it. The owner of a claim is a random text per call, which no
message holds and no hash covers.
"""

from __future__ import annotations

import functools
import uuid
from typing import TYPE_CHECKING, Final

import anyio

from .._stores._protocol import ClaimingStore
from . import _flight

if TYPE_CHECKING:
    from .._stores._protocol import MessageStore
    from ._call import Call
    from ._state import ForumState

#: Seconds a claim holds without a heartbeat: long enough that a worker busy with a slow
#: call, or paused for a garbage collection or a slow store, never loses one it still
#: runs; short enough that a call whose worker died is taken over within a minute.
LEASE: Final = 60.0
#: Seconds between two renewals of a claim by its holder: three per lease, so that two
#: renewals in a row can fail or come late before the claim lapses.
HEARTBEAT: Final = 20.0
#: How many times per heartbeat a waiting call looks at the claim in a store that cannot
#: tell it (SQLite): every 0.25 s with the default heartbeat.
POLLS_PER_HEARTBEAT: Final = 80


@functools.cache
def _has_claims(kind: type[MessageStore]) -> bool:
    """Whether stores of this class hold claims (checked once per class: a protocol
    check looks at every method)."""
    return issubclass(kind, ClaimingStore)


async def lead(call: Call, key: str) -> bool:
    """Claim ``key`` for ``call``: whether it runs its agent (it holds the claim now, or the
    store holds no claims), or was answered from the cache (another process answered).

    Raises:
        Exception: what the store raised (the call records it as its failure).
    """
    state = call.state
    store = state.store
    if not _has_claims(type(store)):
        return True
    assert isinstance(store, ClaimingStore)
    forum = state.forum
    owner = uuid.uuid4().hex
    while True:
        # Shielded: a claim taken is always known, so always released.
        with anyio.CancelScope(shield=True):
            claim = await store.claim(key, owner, forum.lease)
        if claim.owner == owner:
            flight = call.flight
            if flight is None:
                flight = call.flight = _flight.Flight(call)
            state.task_group.start_soon(_hold, store, key, owner, flight, state, name="a claim")
            # Another process may have answered between this call's miss and its claim (an
            # entry found wrong then was reported then).
            if claim.answered and await _answered(call, key, warn=False):
                state.cache_hits += 1
                call.cache_result = _flight.HIT
                return False
            return True
        with anyio.move_on_after(claim.lease_left):
            await store.wait_released(key, poll=forum.heartbeat / POLLS_PER_HEARTBEAT)
        if await _answered(call, key):
            state.calls_followed += 1
            call.cache_result = _flight.FOLLOWED
            return False


async def _answered(call: Call, key: str, *, warn: bool = True) -> bool:
    """Replay the answer the cache holds for ``key``, if it holds one."""
    found = await _flight.cached_answer(call, key, warn=warn)
    if found is None:
        return False
    _flight.replay(call, found)
    return True


async def _hold(
    store: ClaimingStore, key: str, owner: str, flight: _flight.Flight, state: ForumState
) -> None:
    """Renew the claim every heartbeat until the call has ended (landed), then release it
    unless recording the answer did.

    Runs in the forum's task group. A renewal or release the store fails is recorded as
    one of the store's errors (the forum raises it when it exits); the call goes on,
    and if its lease runs out meanwhile, another process may take it over. Cancelled
    with the forum, it releases the claim (shielded) and ends.
    """
    forum = state.forum
    try:
        while not flight.landed:
            with anyio.move_on_after(forum.heartbeat):
                await flight.wait_landed()
            if not flight.landed:
                try:
                    await store.claim(key, owner, forum.lease)
                except Exception as exc:
                    state.store_errors.append(exc)
    finally:
        # Recording the answer released the claim already (whoever held it by then).
        if not flight.recorded:
            with anyio.CancelScope(shield=True):
                try:
                    await store.release(key, owner)
                except Exception as exc:
                    state.store_errors.append(exc)
