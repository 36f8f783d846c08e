"""Agents backed by language models, and the errors they record.

The adapters live in submodules, each with the extra it needs:
:mod:`agentforum.llms.openai` (``pip install "agentforum[openai]"``) for the OpenAI-compatible
Chat Completions API, :mod:`agentforum.llms.anthropic` (``pip install
"agentforum[anthropic]"``) for Anthropic's Messages API. This package itself needs nothing
beyond agentforum: the errors, :class:`Tool`, the Python functions that a model may call,
and :func:`model_request`, the hook through which an adapter's requests are traced
(``docs/observability.md``).
"""

from __future__ import annotations

from .._exceptions import AgentForumError
from .._public import claim
from ._observe import ModelRequest as ModelRequest
from ._observe import model_request as model_request
from ._tools import Tool as Tool
from ._tools import tool as tool


class LLMError(AgentForumError):
    """A language model's server could not answer; the base of the errors below."""


class LLMAuthenticationError(LLMError):
    """The server refused the credentials (HTTP 401 or 403): a missing or wrong API key."""


class LLMRateLimitError(LLMError):
    """The server kept refusing for too many requests (HTTP 429), after the client's retries."""


class LLMServerError(LLMError):
    """The server failed (HTTP 5xx), after the client's retries."""


class LLMRequestError(LLMError):
    """The server refused the request (another HTTP 4xx: an unknown model, a bad argument)."""


class LLMConnectionError(LLMError):
    """The server could not be reached, or the stream of the answer broke off.

    A stream cut mid-way keeps its tokens: the message is recorded with them and
    ``metadata["incomplete"] = True``, then the branch ends with this error.
    """


class LLMToolLoopError(LLMError):
    """The model kept calling tools: one round more than the agent's ``max_tool_rounds``.

    The messages of the call so far (each tool call and result, and the model's last
    answer that calls tools again) stay in the tree; the branch then ends with this error.
    """


__all__ = [
    "LLMAuthenticationError",
    "LLMConnectionError",
    "LLMError",
    "LLMRateLimitError",
    "LLMRequestError",
    "LLMServerError",
    "LLMToolLoopError",
    "ModelRequest",
    "Tool",
    "model_request",
    "tool",
]


claim(globals(), __all__)
del claim
