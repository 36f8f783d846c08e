"""A human in the loop: at the console, or through any front end that calls an API."""

from __future__ import annotations

import collections
import os
import sys
from typing import TYPE_CHECKING, ClassVar, Final, TextIO

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

if TYPE_CHECKING:
    from .._agents import Agent
    from .._forum import Forum
    from .._messages import Message
    from .._runtime import InteractionContext

#: What a user types, alone on a line, to end the conversation.
EXIT: Final = "exit"


class ConsoleUser:
    """The agent function :func:`console_user_agent` returns: a human at a terminal.

    Each call prints its requests, streaming their tokens as they come, then reads the
    human's reply from the input and responds with it; or responds nothing when the human
    ends the conversation (``exit``, or the end of the input). Its calls are never cached
    (``cache = False``): the same question may get another answer. Registered without an
    ``alias``, the agent is called ``"user"``.
    """

    #: ``forum.agent`` registers it uncached: a human's answers are never replayed.
    cache: ClassVar[bool] = False
    #: The default alias in ``forum.agent``.
    __name__: ClassVar[str] = "user"

    def __init__(
        self,
        input: TextIO | None,
        output: TextIO | None,
        prompt: str,
        prefix: str,
        echo: bool | None,
    ) -> None:
        self._input = input
        self._output = output
        # One call reads at a time (a message may take several lines), in the order the
        # calls came; and what a terminal gave beyond a line waits here for the next read.
        self._reading = anyio.Lock()
        self._typed = b""
        #: What is printed before the human types a message.
        self.prompt = prompt
        #: What is printed before each message the human is shown.
        self.prefix = prefix
        self._echo = echo
        self.__doc__ = "A human at the console."

    def __repr__(self) -> str:
        return "<ConsoleUser>"

    async def __call__(self, ctx: InteractionContext) -> None:
        """Show the requests as they stream, then read the reply (see :func:`console_user_agent`).

        Raises:
            AgentError: a request failed.
        """
        output = self._output if self._output is not None else sys.stdout
        async for promise in ctx.request_messages:
            output.write(self.prefix)
            output.flush()
            ended = True
            async for token in promise:
                output.write(token)
                output.flush()
                ended = token.endswith("\n")
            if not ended:
                output.write("\n")
            await promise  # a request that failed fails this call too
        async with self._reading:
            reply = await self._read(output)
        if reply is not None:
            ctx.respond(reply)

    async def _read(self, output: TextIO) -> str | None:
        """Read one message: lines ending in a backslash go on; ``None`` at exit or EOF."""
        source = self._input if self._input is not None else sys.stdin
        echo = self._echo if self._echo is not None else not _is_terminal(source)
        lines: list[str] = []
        while True:
            output.write(self.prompt if not lines else "." * len(self.prompt.rstrip()) + " ")
            output.flush()
            line = await self._read_line(source)
            if not line:  # the end of the input: Ctrl-D at a terminal
                output.write("\n")
                output.flush()
                return None
            if echo:
                output.write(line if line.endswith("\n") else line + "\n")
                output.flush()
            text = line.removesuffix("\n").removesuffix("\r")
            if text.endswith("\\"):
                lines.append(text[:-1])
                continue
            lines.append(text)
            message = "\n".join(lines)
            if len(lines) == 1 and message.strip() == EXIT:
                return None
            if message.strip():
                return message
            lines = []  # nothing typed: ask again

    async def _read_line(self, source: TextIO) -> str:
        """The next line of ``source``, as ``readline`` returns it (``""`` at the end)."""
        terminal = _terminal_descriptor(source)
        if terminal is None:
            # A blocking read, in a worker thread. If the call is cancelled meanwhile, the
            # read is abandoned: the line being typed then goes to the abandoned read.
            return await anyio.to_thread.run_sync(source.readline, abandon_on_cancel=True)
        # A terminal hands its input over a line at a time (at Enter, or Ctrl-D): wait in
        # the event loop until it has some, then read what it has, which does not block.
        # Cancelled, the wait reads nothing: no thread is left waiting for a line, and the
        # next line typed goes to the next read.
        while True:
            line, end, rest = self._typed.partition(b"\n")
            if end:
                self._typed = rest
                return _decode(line + end, source)
            await anyio.wait_readable(terminal)
            chunk = os.read(terminal, 4096)
            if not chunk:  # the end of the input: Ctrl-D at the start of a line
                self._typed = b""
                return _decode(line, source)
            self._typed += chunk


def _terminal_descriptor(stream: TextIO) -> int | None:
    """The file descriptor of ``stream`` if it is a terminal whose input the event loop can
    wait for (POSIX), else ``None``."""
    if os.name != "posix" or not _is_terminal(stream):
        return None
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # no file descriptor behind it
        return None


def _decode(data: bytes, stream: TextIO) -> str:
    """``data`` read from ``stream``'s file descriptor, decoded as ``stream`` decodes."""
    return data.decode(stream.encoding or "utf-8", stream.errors or "strict")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def console_user_agent(
    *,
    input: TextIO | None = None,
    output: TextIO | None = None,
    prompt: str = "you ▸ ",
    prefix: str = "» ",
    echo: bool | None = None,
) -> ConsoleUser:
    """Return an agent function for a human at the console, to give to ``forum.agent``.

    ::

        user = forum.agent(console_user_agent())  # alias "user", never cached
        chat = forum.agent(dialog_loop(user, assistant), alias="chat")

    Each call writes each of its requests to ``output`` after ``prefix``, token by token
    as it streams, then writes ``prompt`` and reads the reply from ``input``, and responds
    with it:

    - a line that ends with a backslash goes on: the next line is part of the same message
      (the backslash is dropped, the line break kept);
    - a message with nothing but white space is not sent: the prompt comes again;
    - ``exit`` alone on the first line, or the end of the input (Ctrl-D at a terminal),
      ends the conversation: the call responds nothing, which ends a
      :func:`dialog_loop`. What was typed before the end of the input is dropped.

    The rest of the program goes on while the human types. At a terminal (on POSIX), the
    call waits in the event loop until the terminal has a line, then reads it from the
    terminal's file descriptor: a call cancelled while it waits (Ctrl-C, say) stops at
    once, and the line typed next goes to the next call that reads. Any other input (a
    pipe, a file, an ``io.StringIO``, a console on Windows) is read in a worker thread
    (:func:`anyio.to_thread.run_sync`), whose read, if the call is cancelled meanwhile, is
    abandoned: the line typed next goes to it, unseen. Calls that read at the same time
    take turns, in the order they came. Nothing but the standard library is needed (no
    rich, no click).

    Args:
        input: Where replies are read (default: ``sys.stdin`` when the call runs).
        output: Where messages and prompts are written (default: ``sys.stdout``).
        prompt: Written before the human types. Continuation lines get dots instead.
        prefix: Written before each message shown.
        echo: Write each line read to the output too, so that a transcript reads as it
            was typed (``None``, the default: when the input is not a terminal, which
            echoes by itself).
    """
    return ConsoleUser(input, output, prompt, prefix, echo)


@attrs.define(eq=False)
class _Question:
    """A call of a :class:`UserProxy`'s agent, waiting for its reply."""

    history: list[Message]
    answered: anyio.Event = attrs.field(factory=anyio.Event)
    reply: str | None = None


class UserProxy:
    """A human in the loop for any front end: calls wait until :meth:`reply` answers them.

    ::

        proxy = UserProxy(forum)  # registers proxy.agent, alias "user", never cached
        chat = forum.agent(dialog_loop(proxy.agent, assistant), alias="chat")

    A call of its ``agent`` waits (until it is cancelled) for a reply given by
    :meth:`reply`, or :meth:`end`. A web page, a bot or a test shows the human what the
    call was asked (:meth:`pending`) and passes the reply on. Calls that wait at the same
    time are answered in the order they started.

    A conversation that waits for a human can stop (cancel it, or end the process) and be
    resumed later, in this process or another one that opens the same store: keep the hash
    of the last message of :meth:`pending` (set a ref), and ask the dialog again with that
    message as its request. See ``docs/agents.md``.

    Args:
        forum: The forum to register the agent in.
        alias: The agent's alias.
        description: The agent's description.

    Raises:
        ValueError: the alias is taken.
    """

    __slots__ = ("_arrived", "_waiting", "agent")

    def __init__(
        self,
        forum: Forum,
        *,
        alias: str = "user",
        description: str = "A human, answering through UserProxy.reply().",
    ) -> None:
        self._waiting: collections.deque[_Question] = collections.deque()
        self._arrived: anyio.Event | None = None
        #: The agent whose calls wait for the human's replies.
        self.agent: Agent = forum.agent(
            self._answer, alias=alias, description=description, cache=False
        )

    def __repr__(self) -> str:
        return f"<UserProxy {self.agent.alias!r}, {len(self._waiting)} waiting>"

    async def _answer(self, ctx: InteractionContext) -> None:
        question = _Question(await ctx.history())
        self._waiting.append(question)
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None
        try:
            await question.answered.wait()
        finally:
            if not question.answered.is_set():  # cancelled: no reply can reach it now
                self._waiting.remove(question)
        if question.reply is not None:
            ctx.respond(question.reply)

    @property
    def waiting(self) -> int:
        """How many calls wait for a reply."""
        return len(self._waiting)

    async def pending(self) -> list[Message]:
        """Wait until a call waits for a reply; return the branch it continues, root first.

        That is the conversation so far: its last message is what the human is asked (for
        a call with requests). A call still waiting is returned again until it is answered.
        A checkpoint; cancelling it cancels only the wait.
        """
        await anyio.lowlevel.checkpoint()
        while not self._waiting:
            if self._arrived is None:
                self._arrived = anyio.Event()
            await self._arrived.wait()
        return list(self._waiting[0].history)

    def reply(self, text: str) -> None:
        """Answer the call that has waited longest with ``text`` (never blocks).

        Raises:
            TypeError: ``text`` is not a ``str``.
            RuntimeError: no call is waiting (await :meth:`pending` first).
        """
        if not isinstance(text, str):
            raise TypeError(f"a reply is a str, not {type(text).__qualname__}")
        self._settle(text)

    def end(self) -> None:
        """Answer the call that has waited longest with no message: the human is done.

        A :func:`dialog_loop` ends there.

        Raises:
            RuntimeError: no call is waiting (await :meth:`pending` first).
        """
        self._settle(None)

    def _settle(self, reply: str | None) -> None:
        if not self._waiting:
            raise RuntimeError(
                f"no call of {self.agent.alias!r} is waiting for a reply: "
                "await proxy.pending() first"
            )
        question = self._waiting.popleft()
        question.reply = reply
        question.answered.set()
