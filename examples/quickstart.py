"""Stream a reply through two agents, then backtrack and branch the conversation.

Run: python examples/quickstart.py [--backend trio]   (Trio: python -m pip install trio)
"""

import argparse
from collections.abc import AsyncIterator

import anyio

from agentforum import Forum, InteractionContext, Message, StreamedMessage

forum = Forum()  # an in-memory message tree


async def words(text: str) -> AsyncIterator[str]:
    """Yield ``text`` word by word, as an LLM's token stream would."""
    for index, word in enumerate(text.split(" ")):
        await anyio.sleep(0.02)  # only so that you can watch the tokens arrive
        yield word if index == 0 else f" {word}"


@forum.agent
async def writer(ctx: InteractionContext) -> None:
    """Answers each request with a (very) short story, token by token."""
    async for request in ctx.request_messages:
        topic = (await request).content
        ctx.respond(StreamedMessage(words(f"Once upon a time there was {topic.lower()}.")))


@forum.agent
async def editor(ctx: InteractionContext) -> None:
    """Hands the requests to the writer and passes its answers on, live."""
    ctx.respond(writer.ask(ctx.request_messages))


async def ask(request: str, branch_from: Message | None = None) -> Message:
    """Ask the editor, print its answer token by token, and return the last message."""
    print(f"user: {request}\neditor: ", end="", flush=True)
    responses = editor.ask(request, branch_from=branch_from)
    async for promise in responses:
        async for token in promise:  # tokens arrive through writer -> editor -> us
            print(token, end="", flush=True)
    print()
    return await responses.last()


async def main() -> None:
    async with forum:
        story = await ask("A dragon who collected teacups")
        happy = await ask("A dragon who found a friend", branch_from=story)
        # Backtrack: continue from `story` again, as a second branch beside the first.
        sad = await ask("A dragon who broke its favourite cup", branch_from=story)
        for name, last in (("first branch", happy), ("second branch", sad)):
            print(f"\n{name} (ends at {last.hash[:10]}):")
            for message in await forum.history(last):
                print(f"  {message.hash[:10]}  {message.sender:>6}: {message.content}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    anyio.run(main, backend=parser.parse_args().backend)
