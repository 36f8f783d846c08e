"""The tree as diagram text: Mermaid (renders on GitHub) and Graphviz DOT.

Each message is a node labelled with its short hash, kind, sender (or receiver) and the
start of its content; an edge goes from each parent to its child, and a dotted edge from
each forwarded message to its original. Labels are escaped for each language, so content
cannot break out of its label.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from agentforum import CallMessage, ErrorMessage, ForwardedMessage, Message

from ._render import kind, printable

if TYPE_CHECKING:
    from ._database import Tree

#: The longest piece of content shown in a node label.
LABEL_LIMIT: Final = 40
#: Characters that Mermaid shows as they are inside a quoted label; others become entities.
_MERMAID_SAFE: Final = frozenset(" .,:;!?'()_+=-/*@$%~")

_MERMAID_CLASSES: Final = {
    "call": "fill:#e0f2ff,stroke:#0969da",
    "forward": "fill:#f5e8ff,stroke:#8250df",
    "error": "fill:#ffe5e5,stroke:#cf222e,color:#82071e",
}
_DOT_STYLES: Final = {
    "message": 'fillcolor="#ffffff"',
    "call": 'fillcolor="#e0f2ff", color="#0969da"',
    "forward": 'fillcolor="#f5e8ff", color="#8250df"',
    "error": 'fillcolor="#ffe5e5", color="#cf222e"',
}


def _label_lines(message: Message, short: int, refs: list[str]) -> tuple[str, str]:
    head = f"{message.hash[:short]} {kind(message)}"
    if refs:
        head += f" ({', '.join(refs)})"
    if isinstance(message, CallMessage):
        return head, f"→ {message.receiver}"
    content = message.content.split("\n", 1)[0]
    if len(content) > LABEL_LIMIT:
        content = content[: LABEL_LIMIT - 1] + "…"
    if isinstance(message, ErrorMessage):
        return head, f"{message.sender}: {message.error_type}: {content}"
    return head, f"{message.sender}: {content}"


def _mermaid_escape(text: str) -> str:
    return "".join(
        char if char.isalnum() or char in _MERMAID_SAFE else f"#{ord(char)};" for char in text
    )


def mermaid(tree: Tree, short: int) -> str:
    """Return a Mermaid flowchart (``graph TD``) of ``tree``."""
    lines = ["graph TD"]
    refs = tree.refs_of()
    by_kind: dict[str, list[str]] = {}
    for key in tree.order:
        message = tree.messages[key]
        node = f"m{key[:short]}"
        head, body = _label_lines(message, short, refs.get(key, []))
        lines.append(f'    {node}["{_mermaid_escape(head)}<br/>{_mermaid_escape(body)}"]')
        by_kind.setdefault(kind(message), []).append(node)
    for key in tree.order:
        message = tree.messages[key]
        if message.parent is not None:
            lines.append(f"    m{message.parent[:short]} --> m{key[:short]}")
        if isinstance(message, ForwardedMessage) and message.original in tree.messages:
            lines.append(f"    m{key[:short]} -.->|original| m{message.original[:short]}")
    for name, style in _MERMAID_CLASSES.items():
        if name in by_kind:
            lines.append(f"    classDef {name} {style}")
            lines.append(f"    class {','.join(by_kind[name])} {name}")
    return "\n".join(lines) + "\n"


def _dot_escape(text: str) -> str:
    # Inside a double-quoted DOT string only the backslash and the quote are special; the
    # backslash also starts label escapes (\n, \l, \N, ...), so it is doubled.
    return printable(text).replace("\\", "\\\\").replace('"', '\\"')


def dot(tree: Tree, short: int) -> str:
    """Return a Graphviz ``digraph`` of ``tree``."""
    lines = [
        "digraph agentforum {",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fontname="monospace", fontsize=10];',
        '    edge [fontname="monospace", fontsize=9];',
    ]
    refs = tree.refs_of()
    for key in tree.order:
        message = tree.messages[key]
        head, body = _label_lines(message, short, refs.get(key, []))
        label = f"{_dot_escape(head)}\\n{_dot_escape(body)}"
        lines.append(f'    "{key[:short]}" [label="{label}", {_DOT_STYLES[kind(message)]}];')
    for key in tree.order:
        message = tree.messages[key]
        if message.parent is not None:
            lines.append(f'    "{message.parent[:short]}" -> "{key[:short]}";')
        if isinstance(message, ForwardedMessage) and message.original in tree.messages:
            lines.append(
                f'    "{key[:short]}" -> "{message.original[:short]}" '
                '[style=dashed, color="#8250df", constraint=false, label="original"];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"
