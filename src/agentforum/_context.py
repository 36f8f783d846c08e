"""The context variable that tells which call's agent function the current task runs."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._runtime import Call

#: The call whose agent function the current task runs (inherited by the tasks it starts).
current_call: ContextVar[Call | None] = ContextVar("agentforum.current_call", default=None)
