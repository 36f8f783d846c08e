"""Export bundles: a whole store in one JSON Lines file that can be checked before import.

The format, ``agentforum-export/2`` (``docs/cli.md`` has the reference)::

    {"contents":2,"format":"agentforum-export/2","messages":3,"refs":{"main":"<hash>"},"sha256":"<hex>"}
    "<the text of a content, as a JSON string>"
    <the canonical encoding of a message>
    <the canonical encoding of a message>
    "<the text of a content, as a JSON string>"
    <the canonical encoding of a message>

Line 1, the header, says how many content and message lines follow, the refs, and the
sha256 of every byte after the header line. A message line is the canonical encoding of a
message's document (``docs/hashing.md``), so the message's hash is the sha256 of that line
(without its ``"\\n"``); a parent always comes before its children. A content line is a
JSON string (written as the canonical JSON of ``docs/hashing.md`` writes strings): each
content that a message names comes once, on the line before the first message that names
it, so a content shared by many messages travels once. Every line ends with ``"\\n"``.

A bundle cut short, even at a line boundary, has fewer lines than its header announces; a
bundle whose lines were edited no longer matches the header's sha256, and an edited line
that is not canonical, or a content that does not hash to what its message names, is
refused on its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Final

import attrs

from agentforum import CallMessage, ForwardedMessage, Message, decode_message, encode_message
from agentforum._hashing import hash_content, json_string

from ._database import UserError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._database import Tree

#: The ``format`` of the header line of a bundle this version writes and reads.
FORMAT: Final = "agentforum-export/2"
_HEADER_KEYS: Final = frozenset({"contents", "format", "messages", "refs", "sha256"})
_HEX64: Final = re.compile(r"[0-9a-f]{64}")


class BundleError(UserError):
    """A file that is not a sound export bundle: not one, cut short, or altered."""


def _header(contents: int, messages: int, refs: Mapping[str, str], body: bytes) -> bytes:
    header = {
        "contents": contents,
        "format": FORMAT,
        "messages": messages,
        "refs": dict(sorted(refs.items())),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    return json.dumps(header, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _content_line(text: str) -> bytes:
    """A content line: the text as a canonical JSON string (docs/hashing.md, section 4.3)."""
    return json_string(text).encode("utf-8")


def encode_bundle(tree: Tree) -> bytes:
    """Return the bundle of every message and ref of ``tree``, parents before children.

    Each content comes once, before the first message that names it. The same store
    always gives the same bytes.
    """
    lines: list[bytes] = []
    sent: set[str] = set()
    for key in tree.order:
        message = tree.messages[key]
        if not isinstance(message, CallMessage) and message.content_hash not in sent:
            sent.add(message.content_hash)
            lines.append(_content_line(message.content))
        lines.append(encode_message(message))
    body = b"".join(line + b"\n" for line in lines)
    refs = {name: key for name, key in tree.refs.items() if key in tree.messages}
    return _header(len(sent), len(tree.order), refs, body) + b"\n" + body


@attrs.frozen
class Bundle:
    """The content of a checked bundle.

    Attributes:
        messages: The messages, in the order of the file.
        refs: The refs of the header, name to hash.
    """

    messages: list[Message]
    refs: dict[str, str]

    def outside_links(self) -> dict[str, str]:
        """Return the links that name a message outside the bundle: hash to what links to it."""
        inside = {message.hash for message in self.messages}
        outside: dict[str, str] = {}
        for message in self.messages:
            links = [("parent", message.parent), ("reply_to", message.reply_to)]
            if isinstance(message, ForwardedMessage):
                links.append(("original", message.original))
            for field, key in links:
                if key is not None and key not in inside:
                    outside.setdefault(key, f"the {field} of message {message.hash[:10]}")
        for name, key in self.refs.items():
            if key not in inside:
                outside.setdefault(key, f"ref {name!r}")
        return outside


def decode_bundle(data: bytes, source: str) -> Bundle:
    """Check every line of a bundle and return its messages and refs.

    Nothing is trusted: the header must announce exactly the lines that follow and their
    sha256, and each line must be the canonical encoding of a message, none twice.

    Raises:
        BundleError: naming ``source`` and the first thing wrong.
    """

    def fail(reason: str) -> BundleError:
        return BundleError(f"{source}: {reason}; nothing was imported")

    first, newline, body = data.partition(b"\n")
    try:
        header = json.loads(first)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("format"), str):
        if not newline and data.startswith((b'{"contents":', b'{"format":"agentforum-export/')):
            raise fail("the bundle is truncated (its header line is cut short)")
        raise fail(f"not an agentforum export bundle (its first line is not a {FORMAT} header)")
    if header["format"] != FORMAT:
        if header["format"].startswith("agentforum-export/"):
            raise fail(f"a bundle of format {header['format']!r}: this agentforum reads {FORMAT}")
        raise fail(f"not an agentforum export bundle (format {header['format']!r})")
    contents, count = header.get("contents"), header.get("messages")
    refs, digest = header.get("refs"), header.get("sha256")
    if (
        header.keys() != _HEADER_KEYS
        or type(count) is not int
        or count < 0
        or type(contents) is not int
        or contents < 0
        or not isinstance(refs, dict)
        or not all(isinstance(k, str) and _is_hash(v) for k, v in refs.items())
        or not _is_hash(digest)
    ):
        raise fail("the header line is malformed")
    if body and not body.endswith(b"\n"):
        raise fail("the bundle is truncated (its last line is cut short)")
    lines = body.split(b"\n")[:-1]
    announced = count + contents
    if len(lines) != announced:
        if len(lines) < announced:
            raise fail(
                f"the bundle is truncated: its header announces {count} messages and "
                f"{contents} contents, it holds {len(lines)} lines"
            )
        raise fail(
            f"its header announces {count} messages and {contents} contents, "
            f"it holds {len(lines)} lines"
        )
    if hashlib.sha256(body).hexdigest() != digest:
        raise fail("the bundle was altered: its lines do not match the sha256 of its header")
    messages: list[Message] = []
    seen: set[str] = set()
    # The contents of the lines read so far that no message named yet, and those named.
    waiting: dict[str, str] = {}
    named: dict[str, str] = {}
    for number, line in enumerate(lines, start=2):
        if line.startswith(b'"'):
            text = _decode_content(line)
            if text is None:
                raise fail(f"line {number} is not a canonical content line")
            key = hash_content(text)
            if key in waiting or key in named:
                raise fail(f"line {number} repeats content {key[:10]}")
            waiting[key] = text
            continue
        message = _decode_message_line(line, waiting, named)
        if isinstance(message, str):
            raise fail(f"line {number} is not a canonical message: {message}")
        if message.hash in seen:
            raise fail(f"line {number} repeats message {message.hash[:10]}")
        seen.add(message.hash)
        messages.append(message)
    if waiting:
        raise fail(f"content {next(iter(waiting))[:10]} is named by no message of the bundle")
    if len(messages) != count:
        raise fail(
            f"its header announces {count} messages and {contents} contents, "
            f"it holds {len(messages)} messages and {len(named)} contents"
        )
    return Bundle(messages, dict(refs))


def _decode_content(line: bytes) -> str | None:
    """The text of a content line, or ``None`` if it is not one, canonically written."""
    try:
        text = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(text, str) or _content_line_or_none(text) != line:
        return None
    return text


def _content_line_or_none(text: str) -> bytes | None:
    try:
        return _content_line(text)
    except UnicodeEncodeError:  # a lone surrogate, written as an escape
        return None


def _decode_message_line(
    line: bytes, waiting: dict[str, str], named: dict[str, str]
) -> Message | str:
    """The message of a line, with its content from an earlier line; or what is wrong."""
    try:
        document = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        document = None
    key = document.get("content") if isinstance(document, dict) else None
    text = None
    if isinstance(key, str):
        text = waiting.get(key, named.get(key))
        if text is None:
            return f"its content {key[:10]} is not on an earlier line"
    try:
        message = decode_message(line, text)
    except (TypeError, ValueError) as exc:
        return str(exc)
    if text is not None and isinstance(key, str):
        named[key] = waiting.pop(key, text)
    return message


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None
