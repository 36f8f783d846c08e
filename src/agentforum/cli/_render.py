"""How messages look in a terminal: one-line summaries, the tree, ``log`` entries, ``show``.

Everything that comes from the database is shown as text, never as markup: a message's
content cannot style the terminal, move the cursor or fake another line, because control
characters are escaped (see :func:`printable`) and rich renders :class:`~rich.text.Text`
objects without interpreting ``[brackets]``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from rich.text import Text

from agentforum import CallMessage, ErrorMessage, ForwardedMessage, Message, encode_message
from agentforum._messages import kind_name

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._database import Tree

#: The longest first line of content shown in a summary when the width is unknown.
CONTENT_LIMIT: Final = 50

STYLES: Final = {
    "hash": "yellow",
    "ref": "bold cyan",
    "message": "green",
    "forward": "magenta",
    "call": "cyan",
    "error": "bold red",
    "sender": "bold",
    "extra": "dim",
    "guide": "dim",
}

_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """Return ``text`` with every non-printable character escaped (``\\n``, ``\\x1b``, ...)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in _ESCAPES:
        return _ESCAPES[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def quoted(text: str, limit: int) -> str:
    """Return the first line of ``text``, cut to ``limit`` characters, in double quotes."""
    line, *rest = text.split("\n", 1)
    if len(line) > limit:
        line = line[: max(limit - 1, 1)] + "…"
    elif rest:
        line += " …"
    return '"' + printable(line.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def compact_json(value: object) -> str:
    """Return ``value`` (a frozen JSON value, as in metadata) as compact, sorted JSON."""
    return json.dumps(_thaw(value), ensure_ascii=False, sort_keys=True, separators=(", ", ": "))


def _thaw(value: object) -> object:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    assert hasattr(value, "items")
    return {key: _thaw(item) for key, item in value.items()}


def summary(
    message: Message,
    short: int,
    refs: list[str] | None = None,
    *,
    limit: int = CONTENT_LIMIT,
) -> Text:
    """Return the one-line summary of ``message``, as ``tree`` and ``log --oneline`` show it.

    ``710427a (main) message user "Hello"``: the short hash, the refs pointing at it, the
    kind, the sender and the first line of content, cut to ``limit`` characters. A call
    shows ``call → receiver`` and its keyword arguments, an error its type, a forward the
    message it forwards, and any message its metadata.
    """
    text = Text()
    text.append(message.hash[:short], STYLES["hash"])
    _append_refs(text, refs)
    name = kind(message)
    text.append(f" {name}", STYLES[name])
    if isinstance(message, CallMessage):
        text.append(" → ")
        text.append(printable(message.receiver), STYLES["sender"])
        for key, value in message.kwargs.items():
            text.append(f" {printable(key)}={printable(compact_json(value))}", STYLES["extra"])
        return text
    text.append(" ")
    text.append(printable(message.sender), STYLES["sender"])
    if isinstance(message, ErrorMessage):
        text.append(f" {printable(message.error_type)}:", STYLES["error"])
    text.append(" " + quoted(message.content, limit))
    if isinstance(message, ForwardedMessage):
        text.append(f"  original={message.original[:short]}", STYLES["extra"])
    if message.metadata:
        text.append(f"  {printable(compact_json(message.metadata))}", STYLES["extra"])
    return text


def tree_lines(tree: Tree, short: int, width: int | None = None) -> Iterator[Text]:
    """Yield the lines of the tree view: every root of ``tree`` and everything under it.

    A message whose parent has no other child is drawn under it at the same indentation (a
    branch reads as a column, as in ``git log``); where a message has several children, each
    child starts a branch of its own, drawn with ``├──`` and ``└──``. The roots are drawn as
    branches too. ``width`` (a terminal's) shortens the content to fit.
    """
    refs = tree.refs_of()
    # (hash, its own guide, the guide of what follows it: its chain and its children)
    stack: list[tuple[str, str, str]] = []

    def branch_out(children: list[str], guide: str) -> None:
        last = len(children) - 1
        stack.extend(
            (
                child,
                guide + ("└── " if index == last else "├── "),
                guide + ("    " if index == last else "│   "),
            )
            for index, child in reversed(list(enumerate(children)))
        )

    branch_out(tree.children.get(None, []), "")
    while stack:
        key, lead, guide = stack.pop()
        message = tree.messages[key]
        line = Text.assemble((lead, STYLES["guide"]))
        line.append_text(summary(message, short, refs.get(key)))
        if width is not None and line.cell_len > width:
            # Shorten the content so that the line fits, keeping at least some of it.
            room = max(20, CONTENT_LIMIT - (line.cell_len - width))
            line = Text.assemble((lead, STYLES["guide"]))
            line.append_text(summary(message, short, refs.get(key), limit=room))
        yield line
        children = tree.children.get(key, [])
        if len(children) == 1:
            stack.append((children[0], guide, guide))
        else:
            branch_out(children, guide)


#: The order in which ``show`` prints a message's fields (any others follow).
FIELD_ORDER: Final = (
    "kind",
    "hash",
    "parent",
    "reply_to",
    "sender",
    "receiver",
    "original",
    "content_hash",
    "error_type",
    "kwargs",
    "metadata",
)


def show_lines(message: Message, refs: list[str], children: list[str]) -> Iterator[Text]:
    """Yield the lines of ``show``: every field of ``message``, then its content."""
    document = json.loads(encode_message(message))
    document["hash"] = message.hash
    document.pop("format")
    # A call has no sender and no content: its encoding leaves them out. The document names
    # the content by its hash; the text follows the fields.
    content = None
    if "content" in document:
        document["content_hash"] = document.pop("content")
        content = message.content
    keys = [key for key in FIELD_ORDER if key in document]
    keys += sorted(set(document) - set(keys))
    for key in keys:
        value = document[key]
        line = Text.assemble((f"{key + ':':<14}", "bold"))
        if key in ("hash", "parent", "reply_to", "original", "content_hash") and isinstance(
            value, str
        ):
            line.append(value, STYLES["hash"])
        elif key == "kind":
            line.append(str(value), STYLES[str(value)])
        elif value is None:
            line.append("none" + (" (a root)" if key == "parent" else ""), STYLES["extra"])
        elif isinstance(value, str):
            line.append(printable(value))
        else:
            line.append(printable(json.dumps(value, ensure_ascii=False, sort_keys=True)))
        yield line
    line = Text.assemble((f"{'refs:':<14}", "bold"))
    line.append(
        ", ".join(printable(name) for name in refs) or "none",
        STYLES["ref"] if refs else STYLES["extra"],
    )
    yield line
    line = Text.assemble((f"{'children:':<14}", "bold"))
    line.append(str(len(children)))
    yield line
    if content is not None:
        yield Text("content:", "bold")
        yield from (Text("    " + printable(row)) for row in content.split("\n"))


def _append_refs(text: Text, refs: list[str] | None) -> None:
    """Append `` (main, other)``: the refs that point at a message, if any."""
    if refs:
        text.append(" (")
        for index, name in enumerate(refs):
            if index:
                text.append(", ")
            text.append(printable(name), STYLES["ref"])
        text.append(")")


def log_entry(message: Message, refs: list[str]) -> Iterator[Text]:
    """Yield the lines of one ``log`` entry, in the manner of ``git log``."""
    name = kind(message)
    line = Text.assemble((f"{name} ", STYLES[name]))
    line.append(message.hash, STYLES["hash"])
    _append_refs(line, refs)
    yield line
    fields: list[tuple[str, str]] = []
    if isinstance(message, CallMessage):
        fields.append(("Receiver", message.receiver))
        if message.kwargs:
            fields.append(("Kwargs", compact_json(message.kwargs)))
    else:
        fields.append(("Sender", message.sender))
    if isinstance(message, ForwardedMessage):
        fields.append(("Original", message.original))
    if isinstance(message, ErrorMessage):
        fields.append(("Error", message.error_type))
    if message.reply_to is not None:
        fields.append(("Reply-To", message.reply_to))
    if message.metadata:
        fields.append(("Metadata", compact_json(message.metadata)))
    for key, value in fields:
        yield Text(f"{key + ':':<10}{printable(value)}")
    if not isinstance(message, CallMessage):
        yield Text()
        yield from (Text("    " + printable(row)) for row in message.content.split("\n"))
    yield Text()


#: The kind of a message, as the commands name it (``message``, ``forward``, ``call``, ``error``).
kind = kind_name
