"""``agentforum chat``: a terminal chat with a model, kept in the database, resumable.

A :func:`~agentforum.agents.console_user_agent` and the model take turns in a
:func:`~agentforum.agents.dialog_loop`. The model is the OpenAI-compatible one when
``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set, else a scripted stand-in (offline). After
every turn, the conversation's ref (``chat/<n>``) and ``chat/latest`` point at its last
message, so that ``agentforum chat --resume REF`` goes on from there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from typing import TYPE_CHECKING, Final, TextIO

import anyio
import attrs

from agentforum import ErrorMessage, Forum, ForwardedMessage, Message
from agentforum.agents import console_user_agent, dialog_loop

from ._database import UserError, db_hint, find, open_store, shown

if TYPE_CHECKING:
    from agentforum import AgentFunction, MessageStore

#: The model asked when neither ``--model`` nor ``AGENTFORUM_MODEL`` names one.
DEFAULT_MODEL: Final = "gpt-4o-mini"
#: The ref that follows the last conversation of any session.
LATEST: Final = "chat/latest"
_NUMBERED: Final = re.compile(r"chat/([0-9]+)")
USER: Final = "user"
ASSISTANT: Final = "assistant"
#: The variables that make the chat ask a real model, through the openai SDK.
MODEL_VARIABLES: Final = ("OPENAI_API_KEY", "OPENAI_BASE_URL")


@attrs.define
class Session:
    """A chat session as the command line reports it when the session ends, however it
    ends (``exit``, Ctrl-D, Ctrl-C, an error): :func:`run_chat` fills it in as it goes.

    Attributes:
        db: The database.
        resume: What ``--resume`` named, if anything.
        ref: The ref of the conversation, once chosen (``None``: the chat never started).
        saved: Whether ``ref`` points at the conversation (it did already, or a turn
            was saved).
    """

    db: str
    resume: str | None
    ref: str | None = None
    saved: bool = False

    def farewell(self) -> str | None:
        """The last line to print: how to resume, or that there is nothing to resume."""
        if self.ref is None:
            return None
        if self.saved:
            return f"Saved. Resume with: agentforum chat --resume {self.ref}{db_hint(self.db)}"
        if self.resume is not None:
            return (
                "Nothing new was said. Resume with: agentforum chat --resume "
                f"{shlex.quote(self.resume)}{db_hint(self.db)}"
            )
        return "Nothing was said, so nothing was saved."


def scripted_reply(history: list[Message]) -> str:
    """The offline model's answer: what it was told, and how much of the chat it sees."""
    said = [message for message in history if message.sender == USER]
    return (
        f"(scripted) You said {history[-1].content!r}. I see {len(history)} messages of "
        f"this chat, {len(said)} of them yours."
    )


def _model(stack: contextlib.AsyncExitStack, name: str | None) -> tuple[AgentFunction, str, str]:
    """The assistant's agent function, its model name, and a line that says which it is.

    Raises:
        UserError: a model is configured, but the openai SDK is not installed.
    """
    configured = [name for name in MODEL_VARIABLES if name in os.environ]
    if configured:
        try:
            import openai

            from agentforum.llms.openai import openai_agent
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "openai":
                raise
            names = " and ".join(configured)
            raise UserError(
                f"{names} {'is' if len(configured) == 1 else 'are'} set, so the chat asks a "
                "model through the openai SDK, which is not installed: "
                "pip install 'agentforum[openai]'"
            ) from None
        model = name or os.environ.get("AGENTFORUM_MODEL") or DEFAULT_MODEL
        # A local server needs no key, but the SDK wants one: any placeholder does.
        client = openai.AsyncOpenAI(api_key=os.environ.get("OPENAI_API_KEY", "unused"))
        stack.push_async_callback(client.close)
        return openai_agent(model=model, client=client), model, f"{model} at {client.base_url}"
    from agentforum.testing import ScriptedModel

    return (
        ScriptedModel(scripted_reply),
        "scripted",
        "scripted, offline (set OPENAI_API_KEY or OPENAI_BASE_URL for a real model)",
    )


async def _session_ref(store: MessageStore, resume: str | None, start: Message | None) -> str:
    """The ref the session advances: the one resumed, one already at the start, or a new one."""
    refs = await store.refs()
    numbered = sorted(
        (int(match[1]), name) for name in refs if (match := _NUMBERED.fullmatch(name))
    )
    if resume is not None and _NUMBERED.fullmatch(resume) and resume in refs:
        return resume
    if start is not None:
        for _, name in numbered:
            if refs[name] == start.hash:
                return name
    return f"chat/{numbered[-1][0] + 1 if numbered else 1}"


async def run_chat(
    session: Session,
    model_name: str | None,
    *,
    input: TextIO | None = None,
    output: TextIO | None = None,
) -> None:
    """Hold the chat; keep ``session`` up to date for its farewell."""
    out = output if output is not None else sys.stdout
    db, resume = session.db, session.resume

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    async with contextlib.AsyncExitStack() as stack:
        # The model first: a missing SDK is reported before the database is touched.
        function, model, about = _model(stack, model_name)
        store = await stack.enter_async_context(open_store(db, create=True))
        start = await find(store, resume) if resume is not None else None
        ref = await _session_ref(store, resume, start)
        session.ref, session.saved = ref, await store.get_ref(ref) is not None
        forum = Forum(store)
        user = forum.agent(
            console_user_agent(input=input, output=output, prefix=f"{ASSISTANT} ▸ "), alias=USER
        )
        assistant = forum.agent(function, alias=ASSISTANT).with_kwargs(model=model)

        async def advance(key: str) -> None:
            # The message is stored already: set the refs, nothing more. Both move, or
            # neither (the command line's Ctrl-C is a cancellation, which waits for this).
            with anyio.CancelScope(shield=True):
                await store.set_ref(ref, key)
                await store.set_ref(LATEST, key)
            session.saved = True

        # No stop condition: each turn starts while the previous one streams, so the
        # console shows the model's answer token by token.
        chat = forum.agent(dialog_loop(user, assistant), alias="chat")
        say(f"agentforum chat: model {about}")
        say("Type exit or Ctrl-D to leave; end a line with \\ to go on to the next.")
        async with forum:
            if start is None:
                say(f"A new conversation, {ref}, in {shown(db)}.\n")
                responses = chat.ask()
            else:
                past = [m for m in await forum.history(start) if not isinstance(m, ErrorMessage)]
                say(
                    f"Resuming {ref} at {start.hash[:10]} ({len(past)} messages), in {shown(db)}.\n"
                )
                for message in past[:-1]:
                    name = "you" if message.sender == USER else message.sender
                    say(f"{name} ▸ {message.content}")
                if start.sender == USER:
                    # The user spoke last: the assistant answers first, then the dialog goes on.
                    say(f"you ▸ {start.content}")
                    answer = await assistant.ask(start).last()
                    await advance(answer.hash)
                    start = answer
                responses = chat.ask(start)  # the user is shown the last message and answers
            # The dialog's responses forward each turn's own message: the ref follows those,
            # the conversation's own branch, as each is complete.
            async for promise in responses:
                forward = await promise
                assert isinstance(forward, ForwardedMessage)
                await advance(forward.original)
            say("")  # before the farewell, which the command line prints
