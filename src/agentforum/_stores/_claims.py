"""What every store with claims (``ClaimingStore``) checks of its arguments."""

from __future__ import annotations

import math

from .._messages import is_hash


def check_claim(call_hash: str, owner: str, lease: float) -> None:
    """Refuse the arguments of ``claim`` that no store can keep.

    Raises:
        ValueError: ``call_hash`` is not a full hash, ``owner`` is empty or not a text, or
            ``lease`` is not a positive, finite number of seconds.
    """
    check_call(call_hash)
    if not isinstance(owner, str) or not owner:
        raise ValueError(f"a claim's owner is a text that is not empty, not {owner!r}")
    check_seconds("lease", lease)


def check_call(call_hash: str) -> None:
    """Raise :exc:`ValueError` unless ``call_hash`` is a full hash (64 lowercase hex)."""
    if not is_hash(call_hash):
        raise ValueError(f"a claim is on a call's full hash, not {call_hash!r}")


def check_seconds(name: str, value: float) -> None:
    """Raise :exc:`ValueError` unless ``value`` is a positive, finite number of seconds."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
