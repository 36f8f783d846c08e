"""The :class:`MessageStore` protocol that every store implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

from .._exceptions import IntegrityError, MessageNotFoundError
from ._refs import ANY

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from .._messages import Message
    from ._refs import Expected


@attrs.frozen
class IntegrityProblem:
    """One problem found by :meth:`MessageStore.verify`.

    Attributes:
        hash: The hash the message is stored under (or the ref or cache key at fault);
            empty for a problem of the store itself rather than of one message (a damaged
            index, a file too damaged to read whole) or of a row whose key is damaged.
        reason: What is wrong, in words. It never quotes stored bytes.
    """

    hash: str
    reason: str


@attrs.frozen
class Claim:
    """Who holds the claim on a call in flight, as :meth:`ClaimingStore.claim` found it.

    Attributes:
        owner: The owner that holds the claim now: the one that asked, when the claim was
            taken, taken over or renewed; another, whose lease is still running, when not.
        lease_left: Seconds until the holder's lease runs out (unless it renews it first),
            by the store's clock.
        answered: Whether the cache index held an entry for the call at that moment: the
            call was answered since the caller last looked, which it should look at again
            before it runs the call.
    """

    owner: str
    lease_left: float
    answered: bool = False


@runtime_checkable
class MessageStore(Protocol):
    """The asynchronous interface of a message store.

    A store is content-addressed: a message is stored under its hash, ``put`` is idempotent,
    and nothing stored ever changes. Refs (named pointers to messages) and the cache index
    (which responses answered which call) are the only mutable parts (and the claims on
    calls in flight, in a store that holds them: :class:`ClaimingStore`). A store holds data
    only: messages and their contents as ``docs/hashing.md`` defines them, never code.

    What every store must do with contents (format ``agentforum/2``):

    - Keep each distinct content once, under its hash (:attr:`Message.content_hash`),
      however many messages name it: a message's own record holds the content's hash, not
      its text. A :class:`CallMessage` has no content.
    - Refuse (``ValueError``) a :class:`ForwardedMessage` whose content is not its
      original's (a forward of a call holds the empty text), after any missing link.
    - Check, on every read of a message kept outside this process's memory (a file, a
      server), that its content's text hashes to the content's hash and its fields to the
      message's hash, and never return one that does not (:exc:`IntegrityError`).
    - Report in :meth:`verify` a content that does not hash to its hash, a message whose
      content is missing, a content that no message names, and a forward whose content is
      not its original's.

    :class:`MemoryStore` is the reference implementation. Every method is a checkpoint.
    """

    async def put(self, message: Message) -> None:
        """Store ``message`` under its hash; storing it again does nothing.

        Raises:
            MessageNotFoundError: its ``parent``, ``reply_to`` or ``original`` is not stored.
            ValueError: it is a forward whose content is not its original's.
        """
        ...

    async def put_many(self, messages: Iterable[Message]) -> None:
        """Store several messages at once: all of them, or none if one cannot be stored.

        The messages may link to each other, in any order.

        Raises:
            MessageNotFoundError: a link names a message that is neither stored nor given.
            ValueError: a forward whose content is not its original's; nothing is stored.
        """
        ...

    async def get(self, hash: str) -> Message:
        """Return the message stored under the full ``hash``.

        Raises:
            MessageNotFoundError: no message has this hash.
            IntegrityError: the stored content or fields do not hash to their hashes.
        """
        ...

    async def resolve(self, hash_or_prefix: str) -> Message:
        """Return the one message whose hash starts with ``hash_or_prefix`` (6 to 64 hex chars).

        Raises:
            ValueError: not 6 to 64 lowercase hexadecimal characters.
            MessageNotFoundError: no message matches.
            AmbiguousHashError: more than one message matches.
        """
        ...

    async def stored(self, hashes: Iterable[str]) -> set[str]:
        """Return those of ``hashes`` that name a stored message, in one batched lookup.

        What a sync asks the other side ("which of these do you have?") to send only what
        it lacks. A string that is not a full hash is never stored. Reads no message: a
        damaged row counts as stored here, and :meth:`get` reports it.

        This default asks :meth:`get` for each hash in turn; a store that can answer for
        many at once (the stores of agentforum do, in one query per thousand hashes)
        overrides it.
        """
        found: set[str] = set()
        for key in hashes:
            try:
                await self.get(key)
            except MessageNotFoundError:
                continue
            except IntegrityError:
                pass  # stored, if damaged
            found.add(key)
        return found

    async def ancestors(self, hash: str) -> list[Message]:
        """Return the branch that ends with ``hash``: its root first, the message itself last.

        Raises:
            MessageNotFoundError: no message has this hash.
        """
        ...

    async def children(self, hash: str | None) -> list[Message]:
        """Return the messages whose parent is ``hash`` (the roots when ``None``), by hash."""
        ...

    async def set_ref(self, name: str, hash: str, *, expected: Expected = ANY) -> None:
        """Point the ref ``name`` at the stored message ``hash`` (creating or moving it).

        With ``expected``, a compare-and-set: the ref moves only if it points at the full
        hash ``expected`` now, or, with ``expected=None``, only if it does not exist; the
        comparison and the move are one atomic step, also against other processes sharing
        the store. Without it the ref moves wherever it points.

        Raises:
            ValueError: ``name`` is not a valid ref name, or ``expected`` is neither a full
                hash nor ``None``.
            MessageNotFoundError: no message has this hash.
            RefConflictError: the ref is not where ``expected`` says (another writer moved
                or created it); it is left alone.
        """
        ...

    async def get_ref(self, name: str) -> str | None:
        """Return the hash the ref ``name`` points at, or ``None`` when there is no such ref.

        Raises:
            ValueError: ``name`` is not a valid ref name.
        """
        ...

    async def delete_ref(self, name: str) -> None:
        """Delete the ref ``name``; deleting a missing ref does nothing.

        Raises:
            ValueError: ``name`` is not a valid ref name.
        """
        ...

    async def refs(self) -> Mapping[str, str]:
        """Return every ref, name to hash."""
        ...

    async def get_cached(self, call_hash: str) -> Sequence[str] | None:
        """Return the response hashes recorded for the call ``call_hash``, or ``None``.

        A forum does not trust them blindly: it uses them only if they are stored and form
        the call's branch, and otherwise runs the agent and warns (:exc:`IntegrityWarning`).

        Raises:
            IntegrityError: the recorded entry cannot be read as a list of hashes (the
                store was corrupted or edited); a forum treats it as a miss, and warns.
        """
        ...

    async def put_cached(self, call_hash: str, response_hashes: Sequence[str]) -> None:
        """Record that the call ``call_hash`` was answered by ``response_hashes``, in order.

        The responses must be the call's own branch: the first one's parent is the call,
        each next one's the previous one (none: the call had no response).

        Raises:
            MessageNotFoundError: the call or one of the responses is not stored.
            ValueError: ``call_hash`` is not a :class:`CallMessage`, or the responses are
                not its branch; nothing is recorded.
        """
        ...

    async def verify(self) -> list[IntegrityProblem]:
        """Check every message, content, link, ref and cache entry; return the problems.

        Recomputes every message's and every content's hash, checks that every message's
        content is stored, that every content is named by some message, that every forward
        holds its original's content, that every ``parent``, ``reply_to`` and ``original``
        link and every ref names a stored message, and that every cache entry is one that
        :meth:`put_cached` accepts: its key a stored call, its responses stored and the
        call's branch. A store that keeps structures of its own beside its messages
        (files, pages, an index of children) checks them too, and checks that walking the
        tree from its roots with :meth:`children` reaches every stored message and nothing
        else: a store that ``verify`` finds sound can be read whole, which is what
        ``agentforum export`` relies on. A store too damaged to be read whole returns a
        problem that says so, rather than raising.
        """
        ...

    async def aclose(self) -> None:
        """Release the store's resources. The forum that opened a store closes it."""
        ...


@runtime_checkable
class ClaimingStore(Protocol):
    """The optional part of a :class:`MessageStore` that runs a call once across processes.

    A store that several processes share (:class:`SQLiteStore`, :class:`PostgresStore`)
    holds *claims* on the calls in flight: a forum that misses the cache claims the call's
    :class:`CallMessage` hash before it runs the agent. The claim holds for a *lease*,
    which the holder renews (its heartbeat) while the agent runs. Recording the answer
    (:meth:`MessageStore.put_cached`) releases the claim, whoever holds it, and wakes
    whoever waits for it, in the same step; a call that fails releases its claim
    (:meth:`release`). Another process making the same call meanwhile finds the claim held,
    waits until it is released (or its lease runs out: the holder died), and then answers
    from the cache, or claims the call and runs it. See ``docs/caching.md``.

    A store that lacks these methods keeps single flight within each forum. The owner of a
    claim is an opaque text that never enters a message or a hash. Every method is a
    checkpoint.
    """

    async def claim(self, call_hash: str, owner: str, lease: float) -> Claim:
        """Claim the call ``call_hash`` for ``owner`` for ``lease`` seconds, unless taken.

        Takes the claim when nobody holds it, takes it over when its holder's lease has run
        out, and renews it (a new lease from now) when ``owner`` holds it already; it is
        one atomic step, also against other processes sharing the store. Otherwise it
        leaves the claim to the owner that holds it.

        Returns:
            The claim as it is now: held by ``owner`` if the claim was taken, taken over or
            renewed.

        Raises:
            ValueError: ``call_hash`` is not a full hash, ``owner`` is empty, or ``lease``
                is not a positive number of seconds.
        """
        ...

    async def release(self, call_hash: str, owner: str) -> None:
        """Release ``owner``'s claim on ``call_hash`` and wake whoever waits for it.

        Does nothing when ``owner`` does not hold the claim (it was taken over, or
        released already).

        Raises:
            ValueError: ``call_hash`` is not a full hash.
        """
        ...

    async def wait_released(self, call_hash: str, *, poll: float) -> None:
        """Wait until the claim on ``call_hash`` may have been released.

        Returns at once when nobody holds a live claim on it, else once the claim is
        released. A store that others cannot wake (an SQLite file) looks again every
        ``poll`` seconds, and returns too when it finds the lease run out; one whose
        server tells it (PostgreSQL's ``LISTEN``) wakes when the claim is released, and
        need not notice a lease running out: bound the wait with
        ``anyio.move_on_after`` (``Claim.lease_left``). It may return early: a caller
        claims again, or reads the cache, and waits again if need be. Cancellable.

        Raises:
            ValueError: ``call_hash`` is not a full hash, or ``poll`` is not positive.
        """
        ...
