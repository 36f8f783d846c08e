"""Calls through the cache: answered from the store, by the one call in flight, or by running.

A call through the cache places its requests and :class:`CallMessage` first: the hash of
the CallMessage is its key. Then, in this order:

- an identical call is in flight (a **leader**, running the agent): this call follows it,
  giving its consumers the leader's responses as they come;
- the store's cache index answers the key: this call replays those messages;
- otherwise this call leads: it runs the agent itself, and registers in the forum's flights,
  so that identical calls made meanwhile follow it. No object or task is made for the
  flight until one does (:class:`Flight`). If the store holds claims, the call first claims
  its key there, and follows an identical call in flight in another process instead, if
  one holds the claim (``_claims.py``).

A flight is cancelled only when all its callers have left it: the leader's consumers (when
the leader is cancelled) and every follower. A leader whose consumers leave while others
follow goes on running for them; its consumers get :exc:`AgentCancelled` at once
(:func:`leave`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Final

import anyio

from .._exceptions import IntegrityError, IntegrityWarning, MessageNotFoundError
from .._messages import ErrorMessage, Message
from .._promises import Failure, MessagePromise, SequenceLog
from .._stores._cache import entry_problems
from . import _claims
from ._writer import CANCELLED, fail_log

if TYPE_CHECKING:
    from ._call import Call

#: How the cache answered a call (``Call.cache_result``): from the cache index, by running
#: the agent, or by an identical call in flight (in this process or in another).
HIT: Final = "hit"
MISS: Final = "miss"
FOLLOWED: Final = "followed"


class Flight:
    """The identical calls that follow a leader: made when the first of them comes.

    The leader (a :class:`Call`) runs the agent; each follower gives its consumers the
    leader's responses. ``landed`` once the leader's task has ended (the calls nested in
    it too) and its answer is in the cache (``recorded``, if it had one to record).
    """

    __slots__ = ("_landed", "followers", "landed", "leader", "recorded")

    def __init__(self, leader: Call) -> None:
        self.leader = leader
        #: The calls that give their consumers the leader's responses.
        self.followers: set[Call] = set()
        self.landed = False
        self.recorded = False
        self._landed: anyio.Event | None = None

    async def wait_landed(self) -> None:
        if not self.landed:
            if self._landed is None:
                self._landed = anyio.Event()
            await self._landed.wait()

    def land(self) -> None:
        self.landed = True
        if self._landed is not None:
            self._landed.set()


async def answer(call: Call) -> None:
    """The task of a call through the cache: its requests, then an answer (see above)."""
    writer = call.writer
    try:
        await writer.write_requests()
    except Exception as exc:
        await writer.record_failure(exc)
        return
    assert writer.call_message is not None
    key = writer.call_message.hash
    state = call.state
    leader = state.flights.get(key)
    if leader is not None and _inside(call, leader):
        await writer.record_failure(
            RecursionError(
                f"this call of {call.agent.alias!r} is identical to a call it is nested "
                "in (same history, requests and keyword arguments): waiting for that "
                "call's answer would never end"
            )
        )
        return
    if leader is None:
        try:
            cached = await cached_answer(call, key)
        except Exception as exc:
            await writer.record_failure(exc)
            return
        if cached is not None:
            state.cache_hits += 1
            call.cache_result = HIT
            replay(call, cached)
            return
        leader = state.flights.get(key)  # an identical call may have started meanwhile
        if leader is None:
            call.key = key
            state.flights[key] = call
            try:  # single flight across processes, if the store holds claims
                runs = await _claims.lead(call, key)
            except Exception as exc:
                await writer.record_failure(exc)
                return
            if runs:
                state.cache_misses += 1
                call.cache_result = MISS
                await call.execute()
            return
    state.calls_followed += 1
    call.cache_result = FOLLOWED
    await _follow(call, leader)


def _inside(call: Call, leader: Call) -> bool:
    """Whether ``call`` is nested, at any depth, in ``leader``'s run.

    Up the callers; at a leader, up the callers of each call following it too (they wait
    for the leader's answer as much as its own caller does).
    """
    pending = [call.caller]
    seen: set[int] = set()
    while pending:
        caller = pending.pop()
        if caller is None or id(caller) in seen:
            continue
        seen.add(id(caller))
        if caller is leader:
            return True
        pending.append(caller.caller)
        if caller.flight is not None:
            pending.extend(follower.caller for follower in caller.flight.followers)
    return False


async def cached_answer(call: Call, key: str, *, warn: bool = True) -> list[Message] | None:
    """The responses the cache index recorded for this call: a hit, or ``None``, a miss.

    An entry is believed only if its responses are stored, verify, and form this call's
    own branch, so that an edited or corrupted store never answers with another call's
    answer. Any other entry is a miss (the agent runs, and its answer replaces the entry)
    reported with an :class:`IntegrityWarning`, unless ``warn`` is false (a second look).
    """
    call_message = call.writer.call_message
    assert call_message is not None
    store = call.state.store
    try:
        found = await store.get_cached(key)
        if found is None:
            return None
        messages = [await store.get(response) for response in found]
    except (IntegrityError, MessageNotFoundError) as exc:
        problem = str(exc)
    else:
        nodes = {m.hash: (m._kind, m.parent) for m in (call_message, *messages)}
        problems = entry_problems(key, found, nodes.get)
        if not problems:
            return messages
        problem = problems[0]
    if not warn:
        return None
    warnings.warn(
        IntegrityWarning(
            f"call {key} is not answered from the cache: {problem}; run "
            "`agentforum fsck` to check the whole store"
        ),
        stacklevel=1,
    )
    return None


def replay(call: Call, found: list[Message]) -> None:
    """Respond with the messages that answered this call before (the cache hit)."""
    log = call.writer.log  # its responses, or their copy if its consumers left it
    for message in found:
        log.append(MessagePromise._of(message))
        call.writer.end = message.hash
    log.close()


async def _follow(call: Call, leader: Call) -> None:
    """Respond with ``leader``'s responses as they come, then wait for it to land."""
    flight = leader.flight
    if flight is None:
        flight = leader.flight = Flight(leader)
    flight.followers.add(call)
    call.following = flight
    try:
        await mirror(call)
        await flight.wait_landed()
    except BaseException:
        _unfollow(call)
        raise
    call.following = None
    flight.followers.discard(call)
    if not leader.clean:
        call.taint()


def _unfollow(call: Call) -> None:
    """Stop following; the last caller to leave a flight cancels it (never blocks)."""
    flight = call.following
    assert flight is not None
    flight.followers.discard(call)
    if not flight.followers and flight.leader.left and not flight.landed:
        call.last_follower = True
        flight.leader.cancel_run()


async def mirror(call: Call) -> None:
    """Give ``call``'s consumers the leader's promises, each as it settles.

    Each promise shares the token log of the leader's (tokens are live), but is the
    follower's own: a follower that stops following fails its promises, not the leader's.
    Resumable: it goes on from the first promise not settled yet. If the leader's consumers
    leave meanwhile, the leader's responses go on in a copy of its log (:func:`leave`),
    which this reads from then on.
    """
    flight = call.following
    assert flight is not None
    leader = flight.leader
    log = call.responses
    while True:
        source = leader.writer.log
        index = call.mirrored
        await source.wait_beyond(index)
        if leader.writer.log is not source:
            continue
        if index == len(source.items):
            if source.failure is not None:
                call.taint()
                call.writer.fail_logs(source.failure)
            else:
                log.close()
            return
        shared = source.items[index]
        if len(log.items) == index:
            log.append(MessagePromise._sharing(shared))
        await shared._settled()
        if leader.writer.log is not source:
            continue
        outcome = shared._outcome()
        promise = log.items[index]
        if isinstance(outcome, Message):
            promise._resolve(outcome)
            call.writer.end = outcome.hash
        else:
            assert outcome is not None
            promise._fail(outcome)
        call.mirrored = index + 1


def leave(leader: Call) -> None:
    """The leader's consumers leave its flight, which others follow: it goes on for them.

    The leader's responses go on in a copy of its log (the promises not settled yet
    replaced by new ones of the same tokens), which the followers read from then on. The
    leader's own log ends with :exc:`AgentCancelled` for its consumers once an
    :class:`ErrorMessage` that says so is stored beside the branch, as a follower that
    leaves stores one: by a task of the forum's, since the leader's is busy running.
    Never blocks.
    """
    leader.left = True
    # Whoever made it no longer waits for it: it runs for its followers now.
    leader.detach()
    writer = leader.writer
    old = leader.responses
    if old.closed:
        return  # the consumers have had every response already
    copy = SequenceLog()
    for promise in old.items:
        copy.append(promise if promise.is_resolved else MessagePromise._sharing(promise))
    writer.log = copy
    if leader.caller is not None:
        leader.caller.taint()
    message = writer.ending(CANCELLED, "the call was cancelled")
    state = leader.state
    state.task_group.start_soon(_end_left, leader, old, message, name="a leader's consumers left")


async def _end_left(leader: Call, log: SequenceLog, message: ErrorMessage) -> None:
    """Store ``message``, then end ``log`` with it for the leader's consumers."""
    with anyio.CancelScope(shield=True):
        try:
            await leader.writer.put(message)
        except Exception as exc:
            # As for any error the store cannot record: the consumers still get it, and
            # the forum raises the store's error when it exits.
            leader.state.store_errors.append(exc)
    fail_log(log, Failure(message, None, observed=True))


async def record_cancellation(call: Call) -> None:
    """End the branch of a cancelled call that followed a flight, or wrote its own."""
    flight, call.following = call.following, None
    if flight is not None and call.last_follower:
        # This call cancelled the flight: its branch is the flight's, cancelled.
        await flight.wait_landed()
        call.following = flight
        await mirror(call)
        call.following = None
        return
    await call.writer.record_cancellation()


async def remember(leader: Call) -> None:
    """Record in the store's cache index the responses of a run that ended cleanly."""
    assert leader.key is not None
    found = [promise._outcome() for promise in leader.writer.log.items]
    answer = [outcome.hash for outcome in found if isinstance(outcome, Message)]
    try:
        await leader.state.store.put_cached(leader.key, answer)
    except Exception as exc:
        # The answer is out (its consumers have it); only the cache index lacks it. As for
        # any error the store cannot record, the forum raises it when it exits.
        leader.state.store_errors.append(exc)
        return
    if leader.flight is not None:
        leader.flight.recorded = True
