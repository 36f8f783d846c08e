"""A research team of agents: a planner, researchers in parallel, a writer and a critic.

The lead agent asks the planner to split a question into sub-questions, asks a researcher
about each of them at once (concurrent calls), has the writer draft an answer from the
notes and the critic review the draft, and the writer revise it if the critic asks. The
answer streams to the terminal token by token, through the writer and the lead; then the
tree of the conversation is printed (`agentforum tree`, from the cli extra).

Offline, with scripted models that know the answer to one question (no network, no key;
--fast leaves out the delays between tokens):

    python examples/research_team.py [--backend trio] [--fast] [--db PATH]

With a real model (pip install "agentforum[openai]"), on OpenAI or a local server:

    OPENAI_API_KEY=sk-... OPENAI_MODEL=gpt-4o-mini python examples/research_team.py "Why?"
    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_MODEL=llama3.2 python examples/research_team.py

The conversation is kept in research_team.db. Caching is on: ask the same question with the
same model again and the answer comes from the database at once, with no agent run and no
model asked (no cost). See docs/llms.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio

from agentforum import Agent, AgentFunction, Forum, InteractionContext, Message
from agentforum.testing import ScriptedModel

if TYPE_CHECKING:
    from collections.abc import Callable

    import openai

ROLES = ("planner", "researcher", "writer", "critic")
PROMPTS = {  # the system prompts of the real models
    "planner": "Split the user's question into 2 or 3 short sub-questions that together "
    "answer it. Reply with the sub-questions only, one per line.",
    "researcher": "You are a researcher. The first message is a question, the last one a "
    "sub-question of it: answer the sub-question in at most 60 words, facts only.",
    "writer": "You are a writer. Answer the question from the research notes in at most "
    "150 words. If a critic reviews your draft, rewrite it as the review asks. Reply with "
    "the answer only.",
    "critic": "You are a critic. Review the last message, a draft answer to the question. "
    "If it needs no change, reply APPROVED and nothing else. Otherwise name at most three "
    "specific fixes, in one short paragraph.",
}

# The scripted models: their replies are functions of the history (stateless, so cacheable).
QUESTION = "Why is the sky blue, and why are sunsets red?"
FACTS = {
    "What is Rayleigh scattering?": "Air molecules are far smaller than the wavelengths "
    "of light, so they scatter short wavelengths much more than long ones: blue about five "
    "times more than red. This is Rayleigh scattering.",
    "Why is the daytime sky blue rather than violet?": "Scattered blue light reaches us "
    "from every direction, so the whole sky glows blue. Violet scatters even more, but "
    "sunlight holds less of it and our eyes are less sensitive to it.",
    "Why are sunsets red?": "At sunset, sunlight crosses far more air to reach us. Most of "
    "the blue is scattered out of the beam on the way, and the reds and oranges are left.",
}
SUMMARY = "In one sentence: air scatters blue light far more than red, so the sky glows blue"
SUMMARY += ", and the long path of sunset light loses its blue and leaves the reds.\n\n"
CRITIQUE = "Accurate and clear, but the short answer is buried: open with one sentence."


def plan(history: list[Message]) -> str:
    if history[-1].content == QUESTION:
        return "\n".join(f"{number}. {question}" for number, question in enumerate(FACTS, 1))
    return "1. What are the key facts?\n2. How do experts explain them?"


def research(history: list[Message]) -> str:
    question = history[-1].content
    return FACTS.get(question, f"The offline team has no notes on {question!r}.")


def write(history: list[Message]) -> str:
    if history[-1].sender == "critic":  # revise: keep the draft, open with a summary
        summary = SUMMARY if history[0].content == QUESTION else "In short: see below.\n\n"
        return summary + history[-2].content
    notes = history[-1].content.splitlines()
    return "\n\n".join(line.removeprefix("A: ") for line in notes if line.startswith("A: "))


SCRIPTS: dict[str, str | Callable[[list[Message]], str]] = {
    "planner": plan,
    "researcher": research,
    "writer": write,
    "critic": CRITIQUE,
}


#: How often the lead agent ran in this process: never, when the answer came from the cache.
lead_runs = 0


def build_team(forum: Forum, client: openai.AsyncOpenAI | None, model: str, delay: float) -> Agent:
    """Register the four models and the lead agent that runs them; return the lead."""
    models: list[AgentFunction]
    if client is None:
        models = [ScriptedModel(SCRIPTS[role], delay=delay) for role in ROLES]
    else:
        from agentforum.llms.openai import openai_agent

        models = [openai_agent(model=model, client=client, system=PROMPTS[r]) for r in ROLES]
    planner, researcher, writer, critic = (
        forum.agent(alias=role)(function) for function, role in zip(models, ROLES, strict=True)
    )

    @forum.agent
    async def lead(ctx: InteractionContext, *, model: str) -> None:
        """Plans, researches in parallel, drafts, has the draft reviewed, revises."""
        global lead_runs
        lead_runs += 1
        # model= is a keyword argument of every call: it is in the calls' hashes, so the
        # cache never answers one model's question with another's answer.
        steps = (await planner.ask(ctx.request_messages, model=model).last()).content
        lines = [re.sub(r"^\W*\d*[.)]?\s*", "", line) for line in steps.splitlines()]
        questions = ([q for q in lines if q.endswith("?")] or [q for q in lines if q])[:3]
        ctx.respond("Plan, researched in parallel:\n" + "\n".join(f"- {q}" for q in questions))
        # ask() returns at once: the researchers all work at the same time.
        calls = [researcher.ask(question, model=model) for question in questions]
        notes = [await call.last() for call in calls]
        brief = "\n".join(f"Q: {q}\nA: {a.content}" for q, a in zip(questions, notes, strict=True))
        draft = await writer.ask(f"Research notes:\n{brief}", model=model).last()
        # The draft already ends the writer's branch, so the critic's call continues it.
        review = await critic.ask(draft, model=model).last()
        if review.content.strip().upper().startswith("APPROVED"):
            ctx.respond("The critic approved the draft:")
            ctx.respond(draft)
        else:
            ctx.respond(f"The critic asked for changes: {review.content}")
            # The writer sees its draft and the review; its tokens reach us live.
            ctx.respond(writer.ask(review, model=model))

    return lead


async def main(question: str, db: str, fast: bool) -> list[Message]:
    """Ask the team, print the answers as they stream; return the answer's branch."""
    configured = [name for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL") if name in os.environ]
    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini") if configured else "scripted"
    async with contextlib.AsyncExitStack() as stack:
        client = None
        if configured:
            try:
                import openai
            except ModuleNotFoundError:
                sys.exit(
                    f"research_team.py: error: {' and '.join(configured)} set, so the team "
                    "asks a model through the openai SDK, which is not installed: "
                    "pip install 'agentforum[openai]'"
                )

            # A local server needs no key, but the SDK needs one: any placeholder will do.
            key = os.environ.get("OPENAI_API_KEY", "unused")
            client = await stack.enter_async_context(openai.AsyncOpenAI(api_key=key))
            print(f"model: {model} at {client.base_url}")
        else:
            print("model: scripted (set OPENAI_API_KEY or OPENAI_BASE_URL for a real one)")
        forum = Forum(db)  # an SQLite file: the tree and its cache outlive the process
        lead = build_team(forum, client, model, delay=0 if fast else 0.015)
        async with forum:
            print(f"\nyou ▸ {question}")
            responses = lead.ask(question, model=model)
            async for promise in responses:
                print("\nlead ▸ ", end="", flush=True)
                async for token in promise:  # live, from the models through the lead
                    print(token, end="", flush=True)
                print()
            answer = await responses.last()
            await forum.set_ref("research-team", answer)
            branch = await forum.history(answer)
    if lead_runs == 0:
        print(f"\n(answered from the cache in {db}: no agent ran, no model was asked)")
    return branch


def show_tree(db: str, branch: list[Message]) -> None:
    """Print the whole database as `agentforum tree` draws it, or else the answer's branch."""
    print(f"\n$ agentforum tree --db {db}", flush=True)
    command = [sys.executable, "-m", "agentforum", "tree", "--db", db]
    if subprocess.run(command, check=False).returncode != 0:  # no cli extra: no click, rich
        for message in branch:
            text = message.content.replace("\n", " ")
            print(f"{message.hash[:7]} {message.sender}: {text[:60]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("question", nargs="?", default=QUESTION, help=f"default: {QUESTION}")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--db", default="research_team.db", help="the SQLite database")
    parser.add_argument("--fast", action="store_true", help="no delays between tokens")
    args = parser.parse_args()
    branch = anyio.run(main, args.question, args.db, args.fast, backend=args.backend)
    show_tree(args.db, branch)
