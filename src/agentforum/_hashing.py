"""The canonical encoding of messages, and their sha256 hashes.

The specification is ``docs/hashing.md``; ``tests/vectors/`` holds its test vectors. Changing
anything here changes every hash: bump :data:`FORMAT` and document the new version instead.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

from ._json import FrozenDict

#: The domain tag of the canonical encoding: every encoded message carries it as ``"format"``.
FORMAT: Final = "agentforum/1"


def _default(value: object) -> object:
    if isinstance(value, FrozenDict):
        return value._data
    raise TypeError(f"{type(value).__qualname__} cannot be encoded")  # pragma: no cover


# The encoder's own encoding of a str (ensure_ascii=False): the same bytes as in a document.
_encode_str = json.encoder.encode_basestring

_encoder = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
    default=_default,
)


#: Contents at least this long are encoded once for all the messages that share them.
LONG_CONTENT: Final = 1024

# The last long content encoded, and its encoding: a message forwarded through nested agents
# is re-hashed at every level with the same content object (a str, immutable), which need
# not be escaped again each time.
# One tuple, replaced whole: a thread never sees the content of one and the encoding of another.
_last: tuple[str, bytes] = ("", b'""')


def canonical_json(document: dict[str, object]) -> bytes:
    """Encode a document (a dict of frozen JSON values) as canonical UTF-8 JSON bytes."""
    return b"".join(canonical_parts(document))


def canonical_hash(document: dict[str, object]) -> str:
    """The lowercase hexadecimal sha256 of :func:`canonical_json` of ``document``."""
    digest = hashlib.sha256()
    for part in canonical_parts(document):
        digest.update(part)
    return digest.hexdigest()


def canonical_parts(document: dict[str, object]) -> tuple[bytes, ...]:
    """:func:`canonical_json` of ``document`` in pieces, so that a long content is not copied."""
    global _last
    content = document.get("content")
    if not isinstance(content, str) or len(content) < LONG_CONTENT:
        return (_encoder.encode(document).encode("utf-8"),)
    # "content" sorts before every other key: it opens the object, the rest follows.
    rest = {key: value for key, value in document.items() if key != "content"}
    assert all(key > "content" for key in rest)
    last = _last
    if last[0] is content:
        encoded = last[1]
    else:
        encoded = _encode_str(content).encode("utf-8")
        _last = (content, encoded)
    tail = _encoder.encode(rest).encode("utf-8")
    return (b'{"content":', encoded, b"," + tail[1:] if rest else b"}")


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hexadecimal sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()
