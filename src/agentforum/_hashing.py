"""The canonical encoding of messages and of their contents, and their sha256 hashes.

The specification is ``docs/hashing.md``; ``tests/vectors/`` holds its test vectors. Changing
anything here changes every hash: bump :data:`FORMAT` and document the new version instead.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

from ._json import FrozenDict

#: The domain tag of the canonical encoding: every encoded message carries it as ``"format"``.
FORMAT: Final = "agentforum/2"

#: What the bytes of a content are prefixed with before they are hashed (``docs/hashing.md``,
#: section 6): the format and the word ``content``, then a NUL byte. No message document
#: (which opens with ``{``) ever starts with these bytes.
CONTENT_TAG: Final = FORMAT.encode("ascii") + b" content\x00"


def _default(value: object) -> object:
    if isinstance(value, FrozenDict):
        return value._data
    raise TypeError(f"{type(value).__qualname__} cannot be encoded")  # pragma: no cover


_encoder = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
    default=_default,
)


#: A JSON string, as the canonical encoding writes one (``ensure_ascii=False``: only ``"``,
#: ``\\`` and the C0 controls are escaped); the encoder's own function.
json_string: Final = json.encoder.encode_basestring


def json_value(value: FrozenDict) -> str:
    """The canonical JSON text of a frozen mapping (metadata or kwargs)."""
    return "{}" if not value else _encoder.encode(value._data)


def json_link(hash: str | None) -> str:
    """A hash-valued key's value: ``null``, or the 64 hex characters quoted (none to escape)."""
    return "null" if hash is None else f'"{hash}"'


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hexadecimal sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_content(text: str) -> str:
    """Return the hash of a message's content: what its document holds as ``"content"``.

    The sha256, as 64 lowercase hex characters, of the 21 bytes ``agentforum/2 content``
    and a zero byte, followed by the UTF-8 bytes of ``text`` (``docs/hashing.md``, section
    6.1). A content shared by many
    messages (a forwarded answer, a document sent to many agents) is hashed and stored
    once, whatever its length; each message names it by this hash.

    Raises:
        TypeError: ``text`` is not a ``str``.
        ValueError: ``text`` holds a lone surrogate (it has no UTF-8 encoding).
    """
    if not isinstance(text, str):
        raise TypeError(f"a content is a str, not {type(text).__qualname__}")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"the content is not valid Unicode text (lone surrogate at index {exc.start})"
        ) from None
    digest = _TAGGED.copy()
    digest.update(data)
    return digest.hexdigest()


# The state of sha256 after the tag: copied for each content, not hashed again.
_TAGGED: Final = hashlib.sha256(CONTENT_TAG)
