"""What an agent function receives: :class:`InteractionContext`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._content import check_point, flatten
from .._json import EMPTY, FrozenDict, JSONValue, freeze_mapping
from .._messages import CallMessage, Message
from .._promises import MessageSequence

if TYPE_CHECKING:
    from .._agents import Agent
    from .._forum import Forum
    from .._promises import MessagePromise, RequestCursor
    from .._stores._protocol import MessageStore
    from ._call import Call


async def branch_of(store: MessageStore, key: str, *, include_calls: bool) -> list[Message]:
    """The branch from its root to the message of the full hash ``key``, oldest first."""
    branch = await store.ancestors(key)
    if include_calls:
        return branch
    return [node for node in branch if not isinstance(node, CallMessage)]


class InteractionContext:
    """What an agent function receives: its requests, a way to respond, its agent and forum."""

    __slots__ = ("_call", "agent", "forum", "request_messages")

    def __init__(self, call: Call, cursor: RequestCursor) -> None:
        self._call = call
        #: The agent being called.
        self.agent: Agent = call.agent
        #: The agent's forum.
        self.forum: Forum = call.state.forum
        #: The requests, as promises, as they arrive (full duplex: before they all exist).
        self.request_messages = MessageSequence(call.requests, self.forum, cursor)

    def __repr__(self) -> str:
        return f"<InteractionContext of {self.agent.alias!r}>"

    async def history(self, *, include_calls: bool = False) -> list[Message]:
        """Return the branch this call continues: from the root to its last request, root first.

        For a call without requests, the branch above its :class:`CallMessage` (``[]`` for
        a call at a new root). It is the input of the call: what a model is prompted with.
        Waits until every request is placed; an agent called with
        :meth:`Agent.start_asking` waits until its caller closes the requests.

        If a request fails instead, the agent function is cancelled in this wait, and the
        call's branch ends with the request's error.

        Args:
            include_calls: Keep the :class:`CallMessage` nodes (left out by default).
        """
        parent = await self._call.writer.branch_end()
        if parent is None:
            return []
        return await branch_of(self._call.state.store, parent, include_calls=include_calls)

    def respond(
        self,
        content: object,
        *,
        reply_to: Message | MessagePromise | str | None = None,
        **metadata: JSONValue,
    ) -> None:
        """Queue ``content`` as responses, in order. Never blocks.

        Content is as for :meth:`Agent.ask`; responding with another call's
        :class:`MessageSequence` passes its messages, and their tokens live, to this call's
        consumers. New messages reply to ``reply_to`` (default: the call's last request) and
        carry ``metadata``; a message that already continues the branch is reused as it is.

        Raises:
            TypeError: content or metadata that is not allowed, as for :meth:`Agent.ask`, or
                nested more than 100 levels deep, or a str of content that is not valid
                Unicode (a lone surrogate).
            ValueError: a metadata value out of range (a NaN, say).
            anyio.ClosedResourceError: the agent function has returned.
        """
        if content is None:
            raise TypeError("respond() got None, which is not message content")
        check_point(reply_to, "reply_to")
        frozen = FrozenDict._trusted(freeze_mapping(metadata, "metadata")) if metadata else EMPTY
        self._call.send("responses", flatten(content, "respond()"), reply_to, frozen)
