"""Compare-and-set of refs: what a store's ``set_ref`` is told to expect, and the check.

A ref is the only thing of a store that moves. Two writers that continue one branch read the
ref, append, and move it: without a condition the second silently throws away the first's
move. ``set_ref(name, hash, expected=old)`` moves the ref only if it still points at ``old``
(``None``: only if it does not exist yet), atomically in each store, and raises
:exc:`RefConflictError` otherwise.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final, Literal

from .._exceptions import RefConflictError
from .._messages import is_hash, is_ref_name

if TYPE_CHECKING:
    from .._messages import Message
    from ._protocol import MessageStore


class _Anywhere(enum.Enum):
    """The type of :data:`ANY`: the default of ``expected``, so ``None`` can mean "absent"."""

    ANY = "ANY"

    def __repr__(self) -> str:
        return "ANY"


#: ``set_ref(name, hash)`` with no ``expected``: move the ref wherever it points, or create it.
ANY: Final = _Anywhere.ANY

#: What ``set_ref`` may be told the ref points at now: a full hash, ``None`` (it must not
#: exist), or :data:`ANY` (no condition).
Expected = str | None | Literal[_Anywhere.ANY]


def check_expected(expected: Expected) -> Expected:
    """Return ``expected`` if it is :data:`ANY`, ``None`` or a full message hash, else raise.

    Raises:
        ValueError: anything else (a prefix or a ref name is not a hash: a condition on what
            a ref points at names the message exactly).
    """
    if expected is ANY or expected is None or is_hash(expected):
        return expected
    raise ValueError(
        f"expected must be a full message hash (64 lowercase hex characters) or None, "
        f"not {expected!r}"
    )


def check_current(name: str, expected: Expected, actual: str | None) -> None:
    """Raise :exc:`RefConflictError` unless the ref ``name``, now at ``actual``, is as expected."""
    if expected is not ANY and expected != actual:
        raise RefConflictError(name, expected, actual)


async def lookup(store: MessageStore, name: str) -> Message:
    """Return the message of ``store`` that a ref, a full hash or a unique prefix names.

    A ref is looked up first, then a hash or a prefix of at least 6 hex characters, as in
    git: what :meth:`Forum.get`, the command line and the web view mean by a name.

    Raises:
        ValueError: no such ref, and not 6 to 64 lowercase hexadecimal characters.
        MessageNotFoundError: no message matches.
        AmbiguousHashError: more than one message matches.
    """
    if is_ref_name(name):
        target = await store.get_ref(name)
        if target is not None:
            return await store.get(target)
    return await store.resolve(name)
