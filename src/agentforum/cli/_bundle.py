"""Export bundles: a whole store in one JSON Lines file that can be checked before import.

The format, ``agentforum-export/1`` (``docs/cli.md`` has the reference)::

    {"format":"agentforum-export/1","messages":3,"refs":{"main":"<hash>"},"sha256":"<hex>"}
    <the canonical encoding of a message>
    <the canonical encoding of a message>
    <the canonical encoding of a message>

Line 1, the header, says how many message lines follow, the refs, and the sha256 of every
byte after the header line. Each following line is one message's canonical encoding
(``docs/hashing.md``), so the message's hash is the sha256 of that line (without its
``"\\n"``); a parent always comes before its children. Every line ends with ``"\\n"``.

A bundle cut short, even at a line boundary, has fewer lines than its header announces; a
bundle whose messages were edited no longer matches the header's sha256, and an edited line
that is not a canonical encoding is refused on its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Final

import attrs

from agentforum import ForwardedMessage, Message, decode_message, encode_message

from ._database import UserError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._database import Tree

#: The ``format`` of the header line of a bundle this version writes and reads.
FORMAT: Final = "agentforum-export/1"
_HEADER_KEYS: Final = frozenset({"format", "messages", "refs", "sha256"})
_HEX64: Final = re.compile(r"[0-9a-f]{64}")


class BundleError(UserError):
    """A file that is not a sound export bundle: not one, cut short, or altered."""


def _header(count: int, refs: Mapping[str, str], body: bytes) -> bytes:
    header = {
        "format": FORMAT,
        "messages": count,
        "refs": dict(sorted(refs.items())),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    return json.dumps(header, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def encode_bundle(tree: Tree) -> bytes:
    """Return the bundle of every message and ref of ``tree``, parents before children.

    The same store always gives the same bytes.
    """
    body = b"".join(encode_message(tree.messages[key]) + b"\n" for key in tree.order)
    refs = {name: key for name, key in tree.refs.items() if key in tree.messages}
    return _header(len(tree.order), refs, body) + b"\n" + body


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
        if not newline and data.startswith(b'{"format":"agentforum-export/'):
            raise fail("the bundle is truncated (its header line is cut short)")
        raise fail(f"not an agentforum export bundle (its first line is not a {FORMAT} header)")
    if header["format"] != FORMAT:
        if header["format"].startswith("agentforum-export/"):
            raise fail(f"a bundle of format {header['format']!r}: this agentforum reads {FORMAT}")
        raise fail(f"not an agentforum export bundle (format {header['format']!r})")
    count, refs, digest = header.get("messages"), header.get("refs"), header.get("sha256")
    if (
        header.keys() != _HEADER_KEYS
        or type(count) is not int
        or count < 0
        or not isinstance(refs, dict)
        or not all(isinstance(k, str) and _is_hash(v) for k, v in refs.items())
        or not _is_hash(digest)
    ):
        raise fail("the header line is malformed")
    if body and not body.endswith(b"\n"):
        raise fail("the bundle is truncated (its last line is cut short)")
    lines = body.split(b"\n")[:-1]
    if len(lines) != count:
        if len(lines) < count:
            raise fail(
                f"the bundle is truncated: its header announces {count} messages, "
                f"it holds {len(lines)}"
            )
        raise fail(f"its header announces {count} messages, it holds {len(lines)}")
    messages: list[Message] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=2):
        try:
            message = decode_message(line)
        except (TypeError, ValueError) as exc:
            raise fail(f"line {number} is not a canonical message: {exc}") from None
        if message.hash in seen:
            raise fail(f"line {number} repeats message {message.hash[:10]}")
        seen.add(message.hash)
        messages.append(message)
    if hashlib.sha256(body).hexdigest() != digest:
        raise fail("the bundle was altered: its messages do not match the sha256 of its header")
    return Bundle(messages, dict(refs))


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None
