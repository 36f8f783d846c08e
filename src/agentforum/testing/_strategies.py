"""Hypothesis strategies for message content, metadata, messages, conversations and requests."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final, TypeAlias

import attrs
from hypothesis import strategies as st

from agentforum import CallMessage, ErrorMessage, ForwardedMessage, Message

if TYPE_CHECKING:
    from collections.abc import Iterable

    from hypothesis.strategies import DrawFn, SearchStrategy

#: The four kinds of message, in the order strategies shrink towards (plain messages first).
ALL_KINDS: Final[tuple[type[Message], ...]] = (Message, ForwardedMessage, CallMessage, ErrorMessage)

Request: TypeAlias = "str | Message | list[Request]"

# Text that a message can hold: any Unicode code point except the lone surrogates, which
# UTF-8, and so the canonical encoding, cannot represent.
_TEXT_CHARACTERS: Final = st.characters(codec="utf-8")
_NAMES: Final = st.sampled_from(("user", "assistant", "model", "tool", "planner"))
_ERROR_TYPES: Final = st.sampled_from(
    ("ValueError", "RuntimeError", "agentforum.AgentCancelled", "my_agents.ToolFailed")
)
# Integers at the edges: of the 64-bit types, of exact floats, and of agentforum's limit of
# 4000 decimal digits.
_EDGE_INTEGERS: Final = st.sampled_from(
    (2**53, 2**53 + 1, -(2**63), 2**63 - 1, 2**64, 10**100, 10**4000 - 1, -(10**4000 - 1))
)


def contents(*, min_size: int = 0, max_size: int | None = None) -> SearchStrategy[str]:
    """Return a strategy for message content: any Unicode text a message can hold.

    Every code point but the lone surrogates (which no UTF-8 text, and so no message, can
    hold): empty strings, white space, control characters, ``"\\x00"``, emoji, right-to-left
    scripts.

    Args:
        min_size: The fewest characters.
        max_size: The most characters (``None``: no limit but Hypothesis' own).
    """
    return st.text(_TEXT_CHARACTERS, min_size=min_size, max_size=max_size)


@functools.cache
def _json_values(max_leaves: int) -> SearchStrategy[object]:
    # Cached: building a recursive strategy costs more than drawing from it.
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        _EDGE_INTEGERS,
        # Finite floats, -0.0, subnormals and the largest ones included.
        st.floats(allow_nan=False, allow_infinity=False),
        contents(max_size=20),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=4).map(tuple),
            st.dictionaries(contents(max_size=10), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def metadata(*, max_leaves: int = 12) -> SearchStrategy[dict[str, object]]:
    """Return a strategy for message metadata (and call keyword arguments): JSON mappings.

    Each value drawn is a ``dict`` with ``str`` keys, as a caller would pass it: values are
    ``None``, ``bool``, ``int`` (large ones too, up to agentforum's limit of 4000 digits),
    finite ``float`` (``-0.0``, subnormals and the largest floats included), Unicode ``str``,
    and lists, tuples and dicts of these, nested. Every one is accepted by :class:`Message`,
    which stores it frozen.

    Args:
        max_leaves: About how many scalar values one mapping holds at most, nested ones
            included.
    """
    return _metadata(max_leaves)


@functools.cache
def _metadata(max_leaves: int) -> SearchStrategy[dict[str, object]]:
    return st.dictionaries(contents(max_size=10), _json_values(max_leaves), max_size=4)


def _hashes() -> SearchStrategy[str]:
    return st.text("0123456789abcdef", min_size=64, max_size=64)


def _senders() -> SearchStrategy[str]:
    return _NAMES | contents(min_size=1, max_size=10)


@st.composite
def _message(
    draw: DrawFn,
    kind: type[Message],
    parent: str | None,
    reply_to: str | None,
    original: tuple[str, str] | None,
) -> Message:
    """Draw a message of ``kind``; a forward forwards ``original``, a (hash, content) pair."""
    extra = draw(st.just({}) | metadata(max_leaves=4))
    if kind is CallMessage:
        return CallMessage(
            receiver=draw(_senders()),
            kwargs=draw(st.just({}) | metadata(max_leaves=4)),
            metadata=extra,
            parent=parent,
            reply_to=reply_to,
        )
    sender = draw(_senders())
    if kind is ForwardedMessage:
        assert original is not None
        return ForwardedMessage(
            content=original[1],
            sender=sender,
            metadata=extra,
            parent=parent,
            reply_to=reply_to,
            original=original[0],
        )
    if kind is ErrorMessage:
        return ErrorMessage(
            content=draw(contents(max_size=30)),
            sender=sender,
            error_type=draw(_ERROR_TYPES),
            metadata=extra,
            parent=parent,
            reply_to=reply_to,
        )
    return Message(
        content=draw(contents(max_size=30)),
        sender=sender,
        metadata=extra,
        parent=parent,
        reply_to=reply_to,
    )


def _check_kinds(kinds: Iterable[type[Message]]) -> tuple[type[Message], ...]:
    chosen = tuple(dict.fromkeys(kinds))
    if not chosen:
        raise ValueError("kinds must name at least one kind of message")
    for kind in chosen:
        if kind not in ALL_KINDS:
            raise ValueError(
                f"kinds must be among Message, ForwardedMessage, CallMessage and ErrorMessage, "
                f"not {kind!r}"
            )
    return chosen


@st.composite
def messages(
    draw: DrawFn,
    *,
    kinds: Iterable[type[Message]] = ALL_KINDS,
    links: SearchStrategy[str] | None = None,
) -> Message:
    """Draw one message of any kind, with every field drawn, as a standalone value.

    Plain messages, forwards, calls (with keyword arguments) and errors, with Unicode
    content and senders, metadata from :func:`metadata`, and links (``parent``,
    ``reply_to``, a forward's ``original``) that are hashes or, for ``parent`` and
    ``reply_to``, ``None``. The links name no message in particular, so a message drawn
    here can be encoded, decoded and hashed, but not stored (a store wants the messages it
    links to first): use :func:`conversations` for messages to store.

    Args:
        kinds: The classes to draw from (default: all four).
        links: A strategy for the hashes of links (default: any 64 lowercase hex digits).

    Raises:
        ValueError: ``kinds`` is empty or holds a class that is not one of the four.
    """
    chosen = _check_kinds(kinds)
    hashes = links if links is not None else _hashes()
    kind = draw(st.sampled_from(chosen))
    parent = draw(st.none() | hashes)
    reply_to = draw(st.none() | hashes)
    original = None
    if kind is ForwardedMessage:
        original = (draw(hashes), draw(contents(max_size=30)))
    return draw(_message(kind, parent, reply_to, original))


@st.composite
def conversations(
    draw: DrawFn,
    *,
    kinds: Iterable[type[Message]] = ALL_KINDS,
    min_size: int = 1,
    max_size: int = 12,
) -> list[Message]:
    """Draw a valid message tree, as a list of distinct messages, each after its links.

    Every ``parent``, ``reply_to`` and ``original`` of a message names a message earlier in
    the list, so storing the messages in order (or all at once with ``put_many``) always
    succeeds, and the store's ``verify()`` then finds no problem. The trees hold several
    roots, long branches and siblings; forwards whose ``original`` is an earlier message
    that is not itself a forward (as the forum makes them) and whose content is the
    original's; calls with keyword arguments; errors; ``reply_to`` links to any earlier
    message.

    Args:
        kinds: The classes of message to use (default: all four). A
            :class:`ForwardedMessage` needs an original: without :class:`Message` and
            :class:`ErrorMessage`, none is made.
        min_size: The fewest messages.
        max_size: The most messages.

    Raises:
        ValueError: ``kinds`` is empty, holds a class that is not one of the four, or only
            :class:`ForwardedMessage`; or the sizes are out of order.
    """
    chosen = _check_kinds(kinds)
    if chosen == (ForwardedMessage,):
        raise ValueError(
            "a ForwardedMessage forwards an earlier Message or ErrorMessage: "
            "kinds must name one of those too"
        )
    if not 0 <= min_size <= max_size:
        raise ValueError(f"need 0 <= min_size <= max_size, got {min_size} and {max_size}")
    size = draw(st.integers(min_size, max_size))
    tree: list[Message] = []
    known: set[str] = set()
    for _ in range(size):
        originals = [m for m in tree if isinstance(m, ErrorMessage) or type(m) is Message]
        possible = [k for k in chosen if k is not ForwardedMessage or originals]
        kind = draw(st.sampled_from(possible))
        # Shrinks towards one long branch: each message the child of the one before.
        placement = draw(st.sampled_from(("last", "root", "any"))) if tree else "root"
        if placement == "last":
            parent: str | None = tree[-1].hash
        elif placement == "any":
            parent = draw(st.sampled_from(tree)).hash
        else:
            parent = None
        replied = draw(st.none() | st.sampled_from(tree)) if tree else None
        reply_to = None if replied is None else replied.hash
        original = None
        if kind is ForwardedMessage:
            forwarded = draw(st.sampled_from(originals))
            original = (forwarded.hash, forwarded.content)
        message = draw(_message(kind, parent, reply_to, original))
        # A message equal to one drawn before (small drawings often are) goes below it
        # instead; each step goes one level deeper, so this ends.
        while message.hash in known:
            message = attrs.evolve(message, parent=message.hash)
        known.add(message.hash)
        tree.append(message)
    return tree


@st.composite
def _request_list(draw: DrawFn, max_size: int) -> list[Request]:
    size = draw(st.integers(0, max_size))
    is_message = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    count = sum(is_message)
    # Messages of a tree in parent-first order: each one's links were placed before it.
    # No calls: a CallMessage marks where an agent took over, it is not something to say.
    tree = iter(
        draw(
            conversations(
                kinds=(Message, ForwardedMessage, ErrorMessage), min_size=count, max_size=count
            )
        )
    )
    items: list[Request] = [
        next(tree) if flag else draw(contents(max_size=30)) for flag in is_message
    ]
    # Nested lists are flattened in order: group a run of items into a list of its own.
    if len(items) >= 2 and draw(st.booleans()):
        start = draw(st.integers(0, len(items) - 1))
        stop = draw(st.integers(start + 1, len(items)))
        items[start:stop] = [items[start:stop]]
    return items


def requests(*, max_size: int = 5) -> SearchStrategy[Request]:
    """Return a strategy for the requests a caller may pass to ``agent.ask()`` as content.

    A value drawn is a ``str`` (Unicode, possibly empty), a root :class:`Message`, or a list
    (possibly empty, possibly holding a nested list) of strings and messages. The messages
    of a list are a valid branch or tree in parent-first order (see :func:`conversations`,
    without calls), so a fresh forum can place each of them: the ones that already continue
    the branch are reused, the others forwarded. Strings shrink first, then single messages,
    then lists.

    Args:
        max_size: The most items in a list.
    """
    single = conversations(kinds=(Message, ErrorMessage), max_size=1).map(lambda tree: tree[0])
    return st.one_of(contents(max_size=40), single, _request_list(max_size))
