"""Ready-made agents built on the public API: chains, loops and a human in the loop.

- :func:`agent_chain`, :func:`agent_loop` and :func:`dialog_loop` return an
  :class:`AgentLoop`, an agent function that calls agents in turn, each continuing the
  previous one's branch (register it with ``forum.agent``).
- A human in the loop: :func:`console_user_agent` (a :class:`ConsoleUser`, at a
  terminal) and :class:`UserProxy` (for any other front end: a web page, a bot, a test).

Presets of keyword arguments are :meth:`agentforum.Agent.with_kwargs`. A guide with
examples: ``docs/agents.md``. This package needs nothing but the core.
"""

from __future__ import annotations

from .._public import claim
from ._human import ConsoleUser as ConsoleUser
from ._human import UserProxy as UserProxy
from ._human import console_user_agent as console_user_agent
from ._loops import AgentLoop as AgentLoop
from ._loops import StopCondition as StopCondition
from ._loops import agent_chain as agent_chain
from ._loops import agent_loop as agent_loop
from ._loops import dialog_loop as dialog_loop

__all__ = (
    "AgentLoop",
    "ConsoleUser",
    "StopCondition",
    "UserProxy",
    "agent_chain",
    "agent_loop",
    "console_user_agent",
    "dialog_loop",
)


claim(globals(), __all__)
del claim
