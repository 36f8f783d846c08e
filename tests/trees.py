"""Random message trees for property tests: every kind of link (parent, reply_to, original)."""

from __future__ import annotations

from hypothesis import strategies as st

from agentforum import CallMessage, ForwardedMessage, Message

#: Few texts, so that contents are shared between messages (a store keeps each once).
TEXTS = ("a", "b", "é\n", "")


@st.composite
def trees(draw: st.DrawFn, max_size: int = 24) -> list[Message]:
    """A tree of messages, parents before children: several roots, forwards, calls, replies."""
    messages: list[Message] = []
    for _ in range(draw(st.integers(1, max_size))):
        index = draw(st.integers(-1, len(messages) - 1))
        parent = messages[index].hash if index >= 0 else None
        reply = draw(st.integers(-1, len(messages) - 1))
        reply_to = messages[reply].hash if reply >= 0 else None
        what = draw(st.sampled_from(("message", "message", "forward", "call")))
        sources = [message for message in messages if not isinstance(message, CallMessage)]
        message: Message
        if what == "forward" and sources:
            original = draw(st.sampled_from(sources))
            message = ForwardedMessage(
                content=original.content,
                sender="f",
                parent=parent,
                reply_to=reply_to,
                original=original.hash,
            )
        elif what == "call":
            message = CallMessage(receiver="agent", parent=parent, reply_to=reply_to)
        else:
            text = draw(st.sampled_from(TEXTS))
            message = Message(content=text, sender=f"s{len(messages)}", parent=parent)
        messages.append(message)
    return messages
