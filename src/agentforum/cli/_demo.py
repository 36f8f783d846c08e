"""``agentforum demo``: a scripted multi-agent conversation, offline, streamed in the terminal.

The agents run on agentforum as any others do; only the "model" is a script. A user asks an
``assistant``, which

1. says what it will do (streamed by the scripted model, word by word),
2. asks a ``researcher`` (its own call, nested in the assistant's) and passes the answer on
   as it streams: the researcher's tokens reach the terminal through the assistant, live,
3. asks a ``critic`` what the researcher's answer misses, and passes that on too,
4. tries a ``search`` tool, which fails: the failure is recorded in the tree as an
   ``ErrorMessage``, and the assistant, which catches the ``AgentError``, reports it,
5. sums up.

Then the user backtracks to the researcher's answer and asks another question there: a
second branch, beside the first. Everything is written to an SQLite database; the same
script writes the same messages, with the same hashes, every time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

import anyio
from rich.text import Text

from agentforum import (
    AgentError,
    Forum,
    ForwardedMessage,
    InteractionContext,
    Message,
    StreamedMessage,
)

from ._database import db_hint, is_url, load_tree, open_store, short_length, shown
from ._render import STYLES, tree_lines

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from rich.console import Console

    from agentforum import Agent, AgentFunction

#: Seconds between two tokens of the scripted model (none with ``--fast``).
TOKEN_DELAY: Final = 0.025

QUESTION: Final = "Our five-person team keeps its wiki in SQLite. Should we move it to Postgres?"
FOLLOW_UP: Final = "And if we grow to 200 people, all editing every day?"
CRITIC_REQUEST: Final = "What does this answer miss?"
SEARCH_QUERY: Final = "sqlite vs postgres wiki benchmarks"

RESEARCHER: Final = {
    QUESTION: (
        "Not yet. SQLite serves a five-person wiki with ease: one file, no server to run, "
        "and reads that scale well. Postgres pays off with many concurrent writers, "
        "fine-grained permissions, or several app servers sharing one database."
    ),
    FOLLOW_UP: (
        "Then move. With hundreds of people writing all day, SQLite's single writer becomes "
        "the bottleneck, and Postgres brings roles, replication and online backups that a "
        "team of that size will want."
    ),
}
CRITIC: Final = {
    CRITIC_REQUEST: (
        "It skips backups and growth. Back SQLite up with its backup API, not by copying "
        "the file while it is written; and if the team may grow, plan the move before it "
        "hurts."
    ),
}
ASSISTANT: Final = {
    "intro": "Let me ask the researcher, then have the critic check the answer.",
    QUESTION: (
        "My advice: stay on SQLite for now, set up nightly backups, and revisit Postgres "
        "when concurrent editing becomes a daily bottleneck."
    ),
    FOLLOW_UP: "So: SQLite today, Postgres at that size. Same question, two branches.",
}

_TOKENS: Final = re.compile(r"\s*\S+")
# Words with the white space before them, and white space alone: joined, the whole text.
_WORDS: Final = re.compile(r"\s*\S+|\s+")


async def tokens(text: str, delay: float) -> AsyncIterator[str]:
    """Yield ``text`` word by word (each word with the space before it), like a model."""
    for token in _TOKENS.findall(text):
        if delay:
            await anyio.sleep(delay)
        yield token


def scripted_model(replies: Mapping[str, str], delay: float) -> AgentFunction:
    """Return an agent function that streams the reply scripted for its last request."""

    async def model(ctx: InteractionContext) -> None:
        requests = await ctx.request_messages.messages()
        ctx.respond(StreamedMessage(tokens(replies[requests[-1].content], delay)))

    return model


def build(forum: Forum, delay: float) -> Agent:
    """Register the demo's agents in ``forum``; return the one the user talks to."""
    researcher = forum.agent(alias="researcher")(scripted_model(RESEARCHER, delay))
    critic = forum.agent(alias="critic")(scripted_model(CRITIC, delay))

    @forum.agent
    async def search(ctx: InteractionContext) -> None:
        """A web search tool that is down (always: the demo never uses the network)."""
        raise ConnectionError("search.example is unreachable (the demo works offline)")

    @forum.agent
    async def assistant(ctx: InteractionContext, review: bool = True) -> None:
        """Delegates to the researcher (and, to review, the critic and the search tool)."""
        question = (await ctx.request_messages.last()).content
        if review:
            ctx.respond(StreamedMessage(tokens(ASSISTANT["intro"], delay)))
        research = researcher.ask(ctx.request_messages)
        ctx.respond(research)  # the researcher's messages, and their tokens as they come
        if review:
            ctx.respond(critic.ask([await research.last(), CRITIC_REQUEST]))
            try:
                await search.ask(SEARCH_QUERY).messages()
            except AgentError as error:  # recorded in the tree; caught, so reported here
                failure = error.message
                ctx.respond(
                    f"(The search tool failed with {failure.error_type}: {failure.content}. "
                    "I'll answer without fresh benchmarks.)"
                )
        ctx.respond(StreamedMessage(tokens(ASSISTANT[question], delay)))

    return assistant


class Typewriter:
    """Prints tokens as they arrive, wrapped at word boundaries and indented."""

    def __init__(self, console: Console, indent: int = 4) -> None:
        self._console = console
        self._indent = " " * indent
        self._width = max(40, min(console.width, 100)) - indent
        self._column = 0

    def write(self, token: str) -> None:
        """Print ``token``, breaking lines between words so that they fit."""
        for index, line in enumerate(token.split("\n")):
            if index:
                self.end()
            for word in _WORDS.findall(line):
                if self._column and self._column + len(word.rstrip()) > self._width:
                    self.end()
                if not self._column:
                    word = word.lstrip()
                    if not word:
                        continue
                    self._console.print(self._indent, end="", soft_wrap=True)
                # soft_wrap: the line breaks are ours; a word too long for a line is not cut.
                self._console.print(Text(word), end="", soft_wrap=True)
                self._column += len(word)

    def end(self) -> None:
        """End the current line."""
        self._console.print(soft_wrap=True)
        self._column = 0


async def converse(
    forum: Forum,
    assistant: Agent,
    console: Console,
    question: str,
    *,
    branch_from: Message | None = None,
    review: bool = True,
) -> list[Message]:
    """Ask ``assistant`` the ``question``, print its answer as it streams; return its messages."""
    console.print(Text.assemble(("you ▸ ", "bold"), question))
    responses = assistant.ask(question, branch_from=branch_from, review=review)
    messages = []
    async for promise in responses:
        writer = Typewriter(console)
        async for token in promise:  # live, through however many agents it comes
            writer.write(token)
        writer.end()
        message = await promise
        signature = Text.assemble(("      — ", STYLES["extra"]))
        if isinstance(message, ForwardedMessage):
            original = await forum.get(message.original)
            signature.append(original.sender, STYLES["sender"])
            signature.append(f" {original.hash[:7]}", STYLES["hash"])
            signature.append(f", passed on by {message.sender} as ", STYLES["extra"])
            signature.append(message.hash[:7], STYLES["hash"])
        else:
            signature.append(message.sender, STYLES["sender"])
            signature.append(f" {message.hash[:7]}", STYLES["hash"])
        console.print(signature)
        messages.append(message)
    console.print()
    return messages


async def run_demo(path: str, console: Console, *, fast: bool) -> None:
    """Write the demo conversation to the database at ``path``, narrating it on ``console``."""
    delay = 0.0 if fast else TOKEN_DELAY
    console.print(
        Text.assemble(
            ("agentforum demo", "bold"),
            ": a scripted conversation between agents, offline (no model, no network, no keys)",
        )
    )
    location = shown(path) if is_url(path) else await anyio.Path(path).absolute()
    console.print(Text(f"writing to {location}\n", STYLES["extra"]))
    async with open_store(path, create=True) as store:
        forum = Forum(store)
        assistant = build(forum, delay)
        async with forum:
            first = await converse(forum, assistant, console, QUESTION)
            # first: intro, the researcher's answer (forwarded), the critic's, the tool
            # failure report, the summary. Back to the researcher's answer, another question.
            research = first[1]
            console.print(
                Text.assemble(
                    ("── backtrack ", "bold"),
                    ("to the researcher's answer ", STYLES["extra"]),
                    (research.hash[:7], STYLES["hash"]),
                    (": a new question there starts a second branch", STYLES["extra"]),
                )
            )
            second = await converse(
                forum, assistant, console, FOLLOW_UP, branch_from=research, review=False
            )
            await forum.set_ref("demo/first", first[-1])
            await forum.set_ref("demo/second", second[-1])
        tree = await load_tree(store)
    console.print(
        Text.assemble(
            ("The message tree", "bold"),
            (f" ({len(tree.order)} messages; `agentforum tree` shows it again):", "dim"),
        )
    )
    width = console.width if console.is_terminal else None
    for line in tree_lines(tree, short_length(tree.order), width):
        console.print(line)
    db = db_hint(path)
    console.print(Text(f"\nThe conversation is in {location}. Try:", "bold"))
    for command in (
        f"agentforum log demo/second{db}",
        f"agentforum log --oneline --calls demo/first{db}",
        f"agentforum show {first[1].hash[:7]}{db}",
        f"agentforum graph --format mermaid{db}",
    ):
        console.print(Text(f"    {command}"))
