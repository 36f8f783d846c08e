"""Messages: the immutable nodes of the message tree."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs

from ._hashing import FORMAT, hash_content, json_link, json_string, json_value, sha256_hex
from ._json import EMPTY, FrozenDict, JSONValue, check_text, freeze_mapping

_HASH_RE: Final = re.compile(r"[0-9a-f]{64}")


def is_hash(value: object) -> bool:
    """Return whether ``value`` is a full message hash (64 lowercase hex characters)."""
    return isinstance(value, str) and _HASH_RE.fullmatch(value) is not None


def _freeze(value: object, name: str) -> FrozenDict:
    if isinstance(value, FrozenDict):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping with str keys, not {type(value).__qualname__}")
    return FrozenDict._trusted(freeze_mapping(value, name)) if value else EMPTY


def _freeze_metadata(value: object) -> FrozenDict:
    return _freeze(value, "metadata")


def _freeze_kwargs(value: object) -> FrozenDict:
    return _freeze(value, "kwargs")


def _check_str(message: Message, name: str) -> None:
    value = getattr(message, name)
    if type(value) is not str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__qualname__}")
        # A str subclass (an enum, say) is stored as its plain value, as in metadata.
        value = str.__str__(value)
        object.__setattr__(message, name, value)
    if not value.isascii():  # an ASCII text is valid: no call to check it
        check_text(value, name)


def _check_link(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a message hash (str) or None, not {type(value).__qualname__}"
        )
    if _HASH_RE.fullmatch(value) is None:
        raise ValueError(
            f"{name} must be a full message hash (64 lowercase hex characters), got {value!r}"
        )


@attrs.frozen(kw_only=True, eq=False)
class Message:
    """An immutable message: a node of the message tree.

    Every field is part of :attr:`hash`, and so is the hash of the parent, so a message's hash
    names the whole branch that leads to it. Two messages are equal when their hashes are.

    Args:
        content: The text of the message.
        sender: Who sent it: an agent's alias, or ``"user"``.
        metadata: JSON values (see :data:`JSONValue`); stored frozen.
        parent: The hash of the previous message of the branch; ``None`` for a root.
        reply_to: The hash of the message this one answers, if any.

    Raises:
        TypeError: a field of the wrong type, or metadata that JSON cannot hold, nested
            more than 100 levels deep included (the message names the key path, e.g.
            ``metadata['a'][0]``).
        ValueError: a non-finite float, a lone surrogate in a string, or a malformed hash.
    """

    _kind: ClassVar[str] = "message"

    content: str
    sender: str
    metadata: Mapping[str, JSONValue] = attrs.field(default=EMPTY, converter=_freeze_metadata)
    parent: str | None = None
    reply_to: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_str(self, "content")
        _check_str(self, "sender")
        _check_link("parent", self.parent)
        _check_link("reply_to", self.reply_to)

    @functools.cached_property
    def hash(self) -> str:
        """The sha256 of the canonical encoding, as 64 lowercase hex characters."""
        return sha256_hex(self._canonical().encode("utf-8"))

    @functools.cached_property
    def content_hash(self) -> str:
        """The hash of ``content`` alone (:func:`hash_content`), which :attr:`hash` covers.

        Messages with the same content share it: a store keeps each content once. (A
        :class:`CallMessage` has no content: its ``content_hash`` is that of the empty
        text, and is not part of its document.)
        """
        return hash_content(self.content)

    def _canonical(self) -> str:
        """The canonical JSON text of the message's document (``docs/hashing.md``).

        Written key by key in canonical order, as ``json.dumps(document, sort_keys=True,
        separators=(",", ":"), ensure_ascii=False)`` would write it (the test vectors and
        the property tests of ``tests/test_hashing.py`` check that it does), without
        building the document: this is what every message's hash is computed from.
        """
        return (
            f'{{"content":"{self.content_hash}","format":"{FORMAT}","kind":"{self._kind}",'
            f'"metadata":{json_value(self.metadata)},"parent":{json_link(self.parent)},'  # type: ignore[arg-type]
            f'"reply_to":{json_link(self.reply_to)},"sender":{json_string(self.sender)}}}'
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Message):
            return self.hash == other.hash
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, Message):
            return self.hash != other.hash
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.hash)


@attrs.frozen(kw_only=True, eq=False)
class ForwardedMessage(Message):
    """A message placed on a branch other than its own, by reference to the original.

    ``content`` is the original's content; ``sender`` is whoever placed it on this branch.

    Args:
        original: The hash of the forwarded message (never itself a forwarded message when the
            forum creates it: forwarding a forward points at the first original).
    """

    _kind: ClassVar[str] = "forward"

    original: str

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.original is None:
            raise TypeError("original must be a message hash (str), not None")
        _check_link("original", self.original)

    def _canonical(self) -> str:
        return (
            f'{{"content":"{self.content_hash}","format":"{FORMAT}","kind":"forward",'
            f'"metadata":{json_value(self.metadata)},"original":"{self.original}",'  # type: ignore[arg-type]
            f'"parent":{json_link(self.parent)},"reply_to":{json_link(self.reply_to)},'
            f'"sender":{json_string(self.sender)}}}'
        )


def forward_of(
    message: Message,
    *,
    sender: str,
    metadata: Mapping[str, JSONValue],
    parent: str | None,
    reply_to: str | None,
) -> ForwardedMessage:
    """Return a forward of ``message`` (of its original, if it is a forward itself).

    The forward names the very content of ``message``: its content hash is taken from it,
    not computed again, so forwarding costs the same whatever the content's length.
    """
    original = message.original if isinstance(message, ForwardedMessage) else message.hash
    forward = ForwardedMessage(
        content=message.content,
        sender=sender,
        metadata=metadata,
        parent=parent,
        reply_to=reply_to,
        original=original,
    )
    object.__setattr__(forward, "content_hash", message.content_hash)
    return forward


def with_content(message: Message, content: str) -> Message:
    """Return ``message`` holding ``content``, an equal string (one object for many messages).

    For stores that keep each content once in memory; the hashes are not computed again.
    """
    if message.content is content:
        return message
    assert message.content == content
    clone = copy.copy(message)
    object.__setattr__(clone, "content", content)
    object.__setattr__(clone, "content_hash", message.content_hash)
    object.__setattr__(clone, "hash", message.hash)
    return clone


@attrs.frozen(kw_only=True, eq=False)
class CallMessage(Message):
    """The node of a call: its parent is the call's last request, its children the responses.

    A call message has no sender and no content (both are ``""``), so identical calls made by
    different callers are one node, and its hash names the call: history, requests, receiver
    and keyword arguments.

    Args:
        receiver: The alias of the agent called.
        kwargs: The keyword arguments of the call (JSON values, stored frozen).
    """

    _kind: ClassVar[str] = "call"

    content: str = attrs.field(default="", init=False, repr=False)
    sender: str = attrs.field(default="", init=False, repr=False)
    receiver: str
    kwargs: Mapping[str, JSONValue] = attrs.field(default=EMPTY, converter=_freeze_kwargs)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        _check_str(self, "receiver")

    def _canonical(self) -> str:
        return (
            f'{{"format":"{FORMAT}","kind":"call","kwargs":{json_value(self.kwargs)},'  # type: ignore[arg-type]
            f'"metadata":{json_value(self.metadata)},"parent":{json_link(self.parent)},'  # type: ignore[arg-type]
            f'"receiver":{json_string(self.receiver)},"reply_to":{json_link(self.reply_to)}}}'
        )


@attrs.frozen(kw_only=True, eq=False)
class ErrorMessage(Message):
    """The end of a branch whose agent raised an exception.

    Args:
        error_type: The exception's type: ``module.QualName``, without the module for
            built-in exceptions (``"ValueError"``, ``"agentforum.AgentCancelled"``).
        content: The exception's text (``str(exception)``).
    """

    _kind: ClassVar[str] = "error"

    error_type: str

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        _check_str(self, "error_type")

    def _canonical(self) -> str:
        return (
            f'{{"content":"{self.content_hash}","error_type":{json_string(self.error_type)},'
            f'"format":"{FORMAT}","kind":"error","metadata":{json_value(self.metadata)},'  # type: ignore[arg-type]
            f'"parent":{json_link(self.parent)},"reply_to":{json_link(self.reply_to)},'
            f'"sender":{json_string(self.sender)}}}'
        )


_KINDS: Final[dict[str, type[Message]]] = {
    cls._kind: cls for cls in (Message, ForwardedMessage, CallMessage, ErrorMessage)
}
_FIELDS: Final[dict[type[Message], frozenset[str]]] = {
    cls: frozenset(field.alias for field in attrs.fields(cls) if field.init)
    for cls in _KINDS.values()
}


def encode_message(message: Message) -> bytes:
    """Return the canonical encoding of ``message``: its document (``docs/hashing.md``).

    ``message.hash`` is the sha256 of these bytes. The document names the content by its
    hash (:attr:`Message.content_hash`) and does not hold the text: :func:`decode_message`
    takes the document and the content to rebuild the message.
    """
    return message._canonical().encode("utf-8")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {duplicate!r} in an encoded message")
    return document


def decode_message(data: bytes | str, content: str | None = None) -> Message:
    """Rebuild a message from its canonical encoding and its content.

    ``data`` is the document made by :func:`encode_message`; ``content`` is the message's
    text, whose hash the document names (``None`` for a :class:`CallMessage`, which has
    none). Only the canonical bytes are accepted, so ``encode_message(decode_message(data,
    content)) == data`` always holds and a stored encoding always hashes to the message's
    hash; the content must hash to the document's ``"content"``.

    Raises:
        ValueError: ``data`` is not the canonical encoding of a message of this format and a
            known kind, lacks or adds a field, or ``content`` is missing, not expected (a
            call), or not the content the document names.
        TypeError: a field has the wrong type.
    """
    try:
        document = json.loads(data, object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not an encoded message: {exc}") from None
    except RecursionError:
        raise ValueError("not an encoded message: it is nested too deeply") from None
    if not isinstance(document, dict):
        raise ValueError("not an encoded message: the top level is not a JSON object")
    version = document.pop("format", None)
    if version != FORMAT:
        if isinstance(version, str) and version.startswith("agentforum/"):
            raise ValueError(
                f"a message of format {version!r}: this agentforum reads {FORMAT!r} only"
            )
        raise ValueError(f"not an encoded message of format {FORMAT!r}")
    kind = document.pop("kind", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown message kind {kind!r}")
    expected = _FIELDS[cls]
    if document.keys() != expected:
        raise ValueError(
            f"a {kind!r} message has the fields {sorted(expected)}, got {sorted(document)}"
        )
    if cls is CallMessage:
        if content is not None:
            raise ValueError("a 'call' message has no content, but a content was given")
        message: Message = cls(**document)
    else:
        if content is None:
            raise ValueError(f"a {kind!r} message needs its content to be decoded")
        named = document["content"]
        if not isinstance(named, str) or hash_content(content) != named:
            raise ValueError(
                f"the content given does not hash to the content hash of the {kind!r} "
                "message's document"
            )
        document["content"] = content
        message = cls(**document)
        object.__setattr__(message, "content_hash", named)
    encoding = encode_message(message)
    if encoding != (data.encode("utf-8") if isinstance(data, str) else data):
        raise ValueError(
            "not a canonical encoding: the same message encodes differently "
            "(see docs/hashing.md for the canonical form)"
        )
    # The hash is that of these very bytes: fill the cached property without encoding again.
    object.__setattr__(message, "hash", sha256_hex(encoding))
    return message


# -- validators of hashes, prefixes, ref names and links ---------------------------------------

_PREFIX_RE: Final = re.compile(r"[0-9a-f]{6,64}")
_REF_RE: Final = re.compile(r"[^\s\x00-\x1f\x7f~^:?*\[\\]{1,255}")


def check_prefix(hash_or_prefix: str) -> str:
    """Return ``hash_or_prefix`` if it is 6 to 64 lowercase hex characters, else raise."""
    if not isinstance(hash_or_prefix, str) or _PREFIX_RE.fullmatch(hash_or_prefix) is None:
        raise ValueError(
            f"{hash_or_prefix!r} is not a message hash or a prefix of one "
            "(6 to 64 lowercase hexadecimal characters)"
        )
    return hash_or_prefix


def is_ref_name(name: str) -> bool:
    """Return whether ``name`` is a valid ref name."""
    return isinstance(name, str) and _REF_RE.fullmatch(name) is not None and _is_text(name)


def check_ref_name(name: str) -> str:
    """Return ``name`` if it is a valid ref name (as in git: no spaces, ``~^:?*[\\``)."""
    if not is_ref_name(name):
        raise ValueError(
            f"{name!r} is not a valid ref name: use 1 to 255 characters, none of them "
            "white space, control characters or ~^:?*[\\"
        )
    return name


def _is_text(name: str) -> bool:
    try:
        check_text(name, "ref name")
    except ValueError:
        return False
    return True


def links(message: Message) -> list[tuple[str, str]]:
    """Return the (field, hash) links of ``message`` that must name stored messages."""
    found = [
        (field, value)
        for field, value in (("parent", message.parent), ("reply_to", message.reply_to))
        if value is not None
    ]
    if isinstance(message, ForwardedMessage):
        found.append(("original", message.original))
    return found


def has_content(message: Message) -> bool:
    """Whether ``message`` names a content (every kind but :class:`CallMessage`)."""
    return not isinstance(message, CallMessage)


def check_forward(forward: Message, original: Message | None) -> None:
    """Raise ValueError if ``forward`` is a forward whose content is not its original's."""
    if (
        isinstance(forward, ForwardedMessage)
        and original is not None
        and original.content_hash != forward.content_hash
    ):
        raise ValueError(
            f"forward {forward.hash} does not hold the content of its original "
            f"{original.hash}: a forward's content is its original's"
        )


def kind_name(message: Message) -> str:
    """The kind of ``message``, as the command line and the web view name it: ``message``,
    ``forward``, ``call`` or ``error``."""
    if isinstance(message, CallMessage):
        return "call"
    if isinstance(message, ForwardedMessage):
        return "forward"
    if isinstance(message, ErrorMessage):
        return "error"
    return "message"
