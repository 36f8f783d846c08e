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


_encoder = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
    default=_default,
)


def canonical_json(document: dict[str, object]) -> bytes:
    """Encode a document (a dict of frozen JSON values) as canonical UTF-8 JSON bytes."""
    return _encoder.encode(document).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hexadecimal sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()
