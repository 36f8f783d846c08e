"""Presets: ``agent.with_kwargs(**kwargs)`` is the same agent with keyword arguments preset."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentforum import Agent, CallMessage, Forum, InteractionContext, JSONValue, Message
from agentforum.testing import metadata

pytestmark = pytest.mark.anyio


def make_forum() -> tuple[Agent, list[dict[str, object]]]:
    forum = Forum()
    runs: list[dict[str, object]] = []

    @forum.agent
    async def show(ctx: InteractionContext, **kwargs: JSONValue) -> None:
        runs.append(dict(kwargs))
        ctx.respond(json.dumps(sorted(kwargs)))

    return show, runs


async def call_of(forum: Forum, last: Message) -> CallMessage:
    calls = [m for m in await forum.history(last, include_calls=True) if isinstance(m, CallMessage)]
    return calls[-1]


async def test_a_preset_call_is_the_call_with_those_kwargs() -> None:
    """``a.with_kwargs(x=1).ask(q)`` makes the CallMessage of ``a.ask(q, x=1)``: one cache entry."""
    show, runs = make_forum()
    forum = show.forum
    preset = show.with_kwargs(x=1, style="short")
    async with forum:
        first = await preset.ask("q").last()
        again = await show.ask("q", x=1, style="short").last()
        assert again == first
        assert runs == [{"x": 1, "style": "short"}]  # the second call came from the cache
        call = await call_of(forum, first)
        assert call.receiver == "show"
        assert dict(call.kwargs) == {"x": 1, "style": "short"}


async def test_call_kwargs_override_presets_and_presets_add_up() -> None:
    """A call's keyword argument overrides the preset of that name; later presets win."""
    show, runs = make_forum()
    forum = show.forum
    preset = show.with_kwargs(x=1, y=[1, 2]).with_kwargs(x=2, z=None)
    assert dict(preset.kwargs) == {"x": 2, "y": (1, 2), "z": None}
    assert dict(show.kwargs) == {}
    async with forum:
        await preset.ask("q", x=3).last()
        preset.tell("told")
        call = preset.start_asking()
        call.send_request("streamed")
        await call.response_sequence().last()
    assert runs == [
        {"x": 3, "y": (1, 2), "z": None},
        {"x": 2, "y": (1, 2), "z": None},
        {"x": 2, "y": (1, 2), "z": None},
    ]


async def test_a_preset_agent_is_the_same_agent_of_the_tree() -> None:
    """Same alias, forum, function and cache; not registered again; compared by identity."""
    show, _ = make_forum()
    preset = show.with_kwargs(temperature=0.5)
    assert (preset.alias, preset.forum, preset.function, preset.cache) == (
        show.alias,
        show.forum,
        show.function,
        show.cache,
    )
    assert preset.description == show.description
    assert preset != show
    assert preset != show.with_kwargs(temperature=0.5)
    assert repr(preset) == "<Agent 'show' with temperature=0.5>"
    assert repr(show) == "<Agent 'show'>"
    assert show.with_kwargs().kwargs == {}


def test_presets_are_checked_at_once() -> None:
    """A preset that is not a JSON value raises when the preset is made, as ``ask`` does."""
    show, _ = make_forum()
    with pytest.raises(TypeError, match="kwargs"):
        show.with_kwargs(when=object())
    with pytest.raises(ValueError, match="finite"):
        show.with_kwargs(x=float("nan"))


async def test_uncached_agent_stays_uncached_with_presets() -> None:
    """``cache=False`` carries over: every call of the preset agent runs."""
    forum = Forum()
    runs = 0

    @forum.agent(cache=False)
    async def clock(ctx: InteractionContext, *, zone: str) -> None:
        nonlocal runs
        runs += 1
        ctx.respond(zone)

    utc = clock.with_kwargs(zone="UTC")
    async with forum:
        assert (await utc.ask("now?").last()).content == "UTC"
        assert (await utc.ask("now?").last()).content == "UTC"
    assert runs == 2
    assert utc.cache is False


@given(presets=metadata(max_leaves=4), own=metadata(max_leaves=4), extra=st.data())
async def test_preset_call_hash_is_the_merged_call_hash(
    presets: dict[str, JSONValue], own: dict[str, JSONValue], extra: st.DataObject
) -> None:
    """For all presets and call kwargs: the CallMessage is that of the merged kwargs."""
    reserved = {"content", "branch_from", "blank_history"}
    presets = {k: v for k, v in presets.items() if k not in reserved}
    own = {k: v for k, v in own.items() if k not in reserved}
    show, _ = make_forum()
    forum = show.forum
    async with forum:
        preset_last = await show.with_kwargs(**presets).ask("q", **own).last()
        merged_last = await show.ask("q", **{**presets, **own}).last()
    assert await call_of(forum, preset_last) == await call_of(forum, merged_last)
    assert preset_last == merged_last
