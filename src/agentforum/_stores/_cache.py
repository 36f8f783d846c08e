"""What a sound entry of the cache index is: the call's own branch of responses.

An entry maps a call's hash to the hashes of the responses that answered it. It is sound
when the key is a stored :class:`CallMessage` and the responses, all stored, form the
call's branch: the first one's parent is the call, each next one's the previous one. The
stores check it when an entry is recorded and in ``verify()``, and a call checks it before
it believes a cache hit, so that an edited entry never answers a call with another's answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exceptions import MessageNotFoundError
from ._protocol import IntegrityProblem

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

#: What the checks need of a stored message: its kind and its parent (``None``: not stored).
Node = tuple[str, "str | None"]


def entry_problems(
    call: str, responses: Sequence[str] | None, node: Callable[[str], Node | None]
) -> list[str]:
    """What is wrong with the cache entry of ``call``, in words (none: it is sound).

    Args:
        call: The entry's key.
        responses: Its response hashes, or ``None`` when they could not be read as such.
        node: The kind and parent of the stored message with a given hash, or ``None``.
    """
    problems = []
    found = node(call)
    if found is None:
        problems.append("a cached call is not in the store")
    elif found[0] != "call":
        problems.append(f"a cache entry's key is a message of kind {found[0]!r}, not a call")
    if responses is None:
        problems.append("its cached responses are not a list of message hashes")
        return problems
    parent = call
    for response in responses:
        found = node(response)
        if found is None:
            problems.append(f"cached response {response} is not in the store")
        elif found[1] != parent:
            problems.append(
                f"cached response {response} does not continue the branch of the call "
                f"(its parent is {found[1]}, not {parent})"
            )
        parent = response
    return problems


def check_entry(call: str, responses: Sequence[str], node: Callable[[str], Node | None]) -> None:
    """Raise unless ``responses`` may be recorded as the cache entry of ``call``.

    Raises:
        MessageNotFoundError: the call or a response is not stored.
        ValueError: the call is not a :class:`CallMessage`, or the responses are not its
            branch.
    """
    for key in (call, *responses):
        if node(key) is None:
            what = "call" if key == call else "response"
            raise MessageNotFoundError(f"{what} {key} is not in the store")
    problems = entry_problems(call, responses, node)
    if problems:
        raise ValueError(f"cannot record a cache entry for {call}: {problems[0]}")


def cache_problems(
    entries: Iterable[tuple[str, Sequence[str] | None]], node: Callable[[str], Node | None]
) -> list[IntegrityProblem]:
    """The problems of every entry of a cache index, for ``verify()``, under their keys."""
    return [
        IntegrityProblem(call, problem)
        for call, responses in entries
        for problem in entry_problems(call, responses, node)
    ]
