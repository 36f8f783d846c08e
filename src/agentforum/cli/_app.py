"""The ``agentforum`` commands (click), each running its async part on asyncio."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import anyio
import anyio.abc
import click
from rich.console import Console
from rich.text import Text

from agentforum import (
    AgentForumError,
    CallMessage,
    IntegrityError,
    IntegrityProblem,
    MemoryStore,
    Message,
    MessageNotFoundError,
    MessageStore,
    encode_message,
)

from . import _bundle, _graph
from ._chat import Session, run_chat
from ._database import (
    DB_VARIABLE,
    DEFAULT_DB,
    Tree,
    UserError,
    db_hint,
    find,
    is_url,
    load_tree,
    open_store,
    short_length,
    shown,
)
from ._demo import run_demo
from ._history import log_branch
from ._render import STYLES, kind, log_entry, printable, show_lines, summary, tree_lines

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator

T = TypeVar("T")

#: The longest first line of content that ``log --oneline`` shows (less in a narrow terminal).
ONELINE_LIMIT = 72
#: Exit status of a command that failed for a reason the user can fix (2 is click's, for
#: usage errors).
EXIT_FAILURE = 1
#: Exit status of a command stopped by Ctrl-C: 128 + SIGINT, as a shell reports a process
#: that SIGINT ended.
EXIT_INTERRUPTED = 130


class CommandError(click.ClickException):
    """A failure reported as one line, ``agentforum: error: ...``, on standard error."""

    exit_code = EXIT_FAILURE

    def show(self, file: object = None) -> None:
        """Print the one-line message (no usage text, no traceback)."""
        click.echo(f"agentforum: error: {self.format_message()}", err=True)


def _describe(exc: BaseException) -> str | None:
    """The one-line message of an error the user can fix, or ``None`` for a bug."""
    if isinstance(exc, BaseExceptionGroup):
        messages = [_describe(inner) for inner in exc.exceptions]
        if messages and all(messages):
            return messages[0]
        return None
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror or exc}"
    if isinstance(exc, AgentForumError):
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, IntegrityError):
            text += " (run `agentforum fsck` for every problem)"
        return text
    return None


def _broken_pipe(exc: BaseException) -> BrokenPipeError | None:
    """The :exc:`BrokenPipeError` that ``exc`` is, or that all of a task group's errors are."""
    if isinstance(exc, BaseExceptionGroup):
        pipes = [_broken_pipe(inner) for inner in exc.exceptions]
        return pipes[0] if pipes and all(pipes) else None
    return exc if isinstance(exc, BrokenPipeError) else None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix (see :func:`_describe`) into a one-line failure.

    A broken pipe (``agentforum demo | head -3``), however deep in a task group it was
    raised, goes on as itself: click ends the command quietly, with status 1.
    """
    try:
        yield
    except (AgentForumError, OSError, BaseExceptionGroup) as exc:
        pipe = _broken_pipe(exc)
        if pipe is not None:
            raise pipe from None
        message = _describe(exc)
        if message is None:
            raise
        raise CommandError(message) from None


def run(function: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run ``function(*args)`` on asyncio, reporting user errors in one line.

    Ctrl-C cancels it (see :func:`_until_interrupted`): its tasks end, its stores close
    (what was written is kept), and the command exits with :data:`EXIT_INTERRUPTED`.
    """
    with user_errors():
        try:
            outcome = anyio.run(
                _until_interrupted, functools.partial(function, *args), backend="asyncio"
            )
        except KeyboardInterrupt:  # a Ctrl-C that came before or after the watch
            outcome = _Interrupted()
        if isinstance(outcome, _Interrupted):
            click.echo(err=True)  # end the line where the terminal echoed ^C
            raise SystemExit(EXIT_INTERRUPTED)
        return outcome


class _Interrupted:
    """What :func:`_until_interrupted` returns when Ctrl-C cancelled the work."""


async def _until_interrupted(work: Callable[[], Awaitable[T]]) -> T | _Interrupted:
    """Await ``work()``; Ctrl-C (SIGINT) cancels it as a cancel scope does.

    Left to asyncio, Ctrl-C cancels the main task natively, which anyio's shielded scopes
    do not hold back, so that two writes meant to be done together (both refs of a chat)
    could be cut apart. Where signals cannot be received (Windows, a thread other than the
    main one), Ctrl-C is asyncio's: ``anyio.run`` raises :exc:`KeyboardInterrupt`.
    """
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        return await work()
    interrupted = False
    async with anyio.create_task_group() as group:

        async def watch(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    interrupted = True
                    group.cancel_scope.cancel()

        await group.start(watch)
        result = await work()
        group.cancel_scope.cancel()  # the watch: the work is done
    return _Interrupted() if interrupted else result


class _Console(Console):
    """A rich console whose broken pipe is a :exc:`BrokenPipeError`, as for any other write
    (rich's own way, ``SystemExit(1)``, would be one more error in a task group)."""

    def on_broken_pipe(self) -> None:
        """Write nothing more; raise :exc:`BrokenPipeError`."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def stdout() -> Console:
    """The console for results: colour in a terminal (unless NO_COLOR), plain when piped."""
    return _Console(highlight=False, soft_wrap=True)


def emit(console: Console, lines: Iterable[Text]) -> None:
    """Print ``lines``: styled in a terminal, as plain text (fast) when there is no colour."""
    if console.color_system is None:
        # Piped (and not forced to colour): the styles would print nothing, so skip rich's
        # rendering, which costs more than the rest of a 10,000-message `log`.
        console.file.writelines(line.plain + "\n" for line in lines)
        return
    batch: list[Text] = []
    for line in lines:
        batch.append(line)
        if len(batch) == 500:
            console.print(Text("\n").join(batch))
            batch = []
    if batch:
        console.print(Text("\n").join(batch))


def db_option(function: Callable[..., None]) -> Callable[..., None]:
    """Add the ``--db PATH|URL`` option that every command has (else ``$AGENTFORUM_DB``)."""
    return click.option(
        "--db",
        "db",
        default=DEFAULT_DB,
        show_default=True,
        envvar=DB_VARIABLE,
        show_envvar=True,
        metavar="PATH|URL",
        type=click.Path(dir_okay=False),
        help="The agentforum database to use: an SQLite file, or a PostgreSQL database "
        "(postgresql://user@host/name).",
    )(function)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="agentforum", prog_name="agentforum")
def cli() -> None:
    """Inspect, check and share the message trees of agentforum, in the manner of git.

    Every command works on a database: an SQLite file, or a PostgreSQL database named by a
    postgresql:// URL; the one --db names, else $AGENTFORUM_DB, else `agentforum.db` in the
    working directory. Start with `agentforum demo`.
    """


# -- log ----------------------------------------------------------------------------------------


@cli.command()
@click.argument("ref")
@click.option("--oneline", is_flag=True, help="One line per message.")
@click.option(
    "-n",
    "--max-count",
    type=click.IntRange(min=0),
    metavar="N",
    help="Show at most N messages (the newest).",
)
@click.option("--calls", is_flag=True, help="Show the call messages too.")
@db_option
def log(ref: str, oneline: bool, max_count: int | None, calls: bool, db: str) -> None:
    """Show the branch that ends at REF, newest first, like `git log`.

    REF is a ref (such as demo/first), a message hash, or a unique prefix of one (at least 6
    hex characters); or A..B, for the messages of B's branch that are not on A's (those
    after their merge base), as in git. Call messages are left out unless --calls is given.
    """
    branch, refs = run(_branch, db, ref)
    if not calls:
        branch = [message for message in branch if kind(message) != "call"]
    branch.reverse()
    if max_count is not None:
        branch = branch[:max_count]
    console = stdout()

    def lines() -> Iterator[Text]:
        for message in branch:
            names = refs.get(message.hash, [])
            if not oneline:
                yield from log_entry(message, names)
                continue
            yield oneline_summary(console, message, names)

    emit(console, lines())


def oneline_summary(
    console: Console, message: Message, names: list[str], *, before: int = 0
) -> Text:
    """The summary of ``message`` that ``log --oneline`` prints, its content cut to
    :data:`ONELINE_LIMIT` characters, or less so that the line (after ``before`` cells of
    something else) fits a terminal."""
    line = summary(message, 10, names, limit=ONELINE_LIMIT)
    overflow = before + line.cell_len - console.width
    if console.is_terminal and overflow > 0:
        line = summary(message, 10, names, limit=max(20, ONELINE_LIMIT - overflow))
    return line


async def _branch(db: str, ref: str) -> tuple[list[Message], dict[str, list[str]]]:
    async with open_store(db) as store:
        branch = await log_branch(store, ref)
        refs: dict[str, list[str]] = {}
        for name, key in (await store.refs()).items():
            refs.setdefault(key, []).append(name)
        return branch, refs


# -- show ---------------------------------------------------------------------------------------


@cli.command()
@click.argument("name", metavar="HASH")
@click.option("--json", "as_json", is_flag=True, help="Print the canonical encoding instead.")
@db_option
def show(name: str, as_json: bool, db: str) -> None:
    """Show every field of one message.

    HASH is a message hash, a unique prefix of one (at least 6 hex characters), or a ref.
    With --json, print the message's canonical encoding: the bytes its hash is the sha256 of.
    """
    message, refs, children = run(_message, db, name)
    if as_json:
        click.echo(encode_message(message).decode("utf-8"))
        return
    emit(stdout(), show_lines(message, refs, children))


async def _message(db: str, name: str) -> tuple[Message, list[str], list[str]]:
    async with open_store(db) as store:
        message = await find(store, name)
        refs = [ref for ref, key in (await store.refs()).items() if key == message.hash]
        children = [child.hash for child in await store.children(message.hash)]
        return message, refs, children


# -- tree ---------------------------------------------------------------------------------------


@cli.command()
@db_option
def tree(db: str) -> None:
    """Show every branch of the database as a tree.

    Each line is one message: its short hash, the refs that point at it, its kind, its
    sender and the first line of its content. A message whose parent has no other child is
    drawn under it at the same indentation; where a message has several children, each one
    starts a branch (├──, └──).
    """
    whole = run(_tree, db)
    console = stdout()
    refs = len(whole.refs)
    console.print(
        Text.assemble(
            (shown(db), "bold"),
            (f"  {len(whole.order)} messages, {refs} ref{'s' if refs != 1 else ''}", "dim"),
        )
    )
    width = console.width if console.is_terminal else None
    emit(console, tree_lines(whole, short_length(whole.order), width))


async def _tree(db: str) -> Tree:
    async with open_store(db) as store:
        return await load_tree(store)


# -- refs ---------------------------------------------------------------------------------------


@cli.command()
@db_option
def refs(db: str) -> None:
    """List the refs, by name, each with the message it points at, like `git branch -v`.

    Each line is a ref's name, then its message as `log --oneline` shows it: short hash,
    kind, sender and first line of content. A database without refs prints nothing. A
    ref whose message is missing or damaged is reported on standard error instead (run
    `agentforum fsck`), and the status is then 1.
    """
    found, problems = run(_refs, db)
    console = stdout()
    width = max((len(name) for name, _ in found), default=0)

    def lines() -> Iterator[Text]:
        for name, message in found:
            shown = printable(name)
            line = Text.assemble((shown, STYLES["ref"]), " " * (width - len(shown) + 2))
            yield line.append_text(oneline_summary(console, message, [], before=width + 2))

    emit(console, lines())
    for problem in problems:
        click.echo(f"agentforum: error: {problem}", err=True)
    if problems:
        raise SystemExit(EXIT_FAILURE)


async def _refs(db: str) -> tuple[list[tuple[str, Message]], list[str]]:
    """Every ref whose message can be read, by name, and a line for each that cannot."""
    async with open_store(db) as store:
        found: list[tuple[str, Message]] = []
        problems: list[str] = []
        for name, key in sorted((await store.refs()).items()):
            target = await _ref_target(store, name, key)
            if isinstance(target, str):
                problems.append(target)
            else:
                found.append((name, target))
        return found, problems


async def _ref_target(store: MessageStore, name: str, key: str) -> Message | str:
    """The message the ref ``name`` points at, or why it cannot be read."""
    try:
        return await store.get(key)
    except MessageNotFoundError:
        return (
            f"ref {printable(name)} points at {key}, which is not in the database "
            "(run `agentforum fsck` for every problem)"
        )
    except IntegrityError as exc:
        return f"ref {printable(name)}: {_describe(exc)}"


# -- fsck ---------------------------------------------------------------------------------------


@cli.command()
@db_option
def fsck(db: str) -> None:
    """Check the whole database: the file, every hash, every link, every ref.

    Exits with 0 when all is sound; otherwise prints one line per problem, `HASH: reason`
    (`PATH: reason` for a problem of the file itself, such as a damaged index), and exits
    with 1.
    """
    problems, counts = run(_fsck, db)
    if problems:
        for problem in problems:
            click.echo(f"{problem.hash or shown(db)}: {problem.reason}")
        count = len(problems)
        click.echo(f"agentforum: fsck: {count} problem{'s' if count != 1 else ''} found", err=True)
        raise SystemExit(EXIT_FAILURE)
    messages, contents, refs = counts
    click.echo(
        f"{shown(db)}: sound ({messages} messages, {contents} contents and {refs} refs checked)"
    )


async def _fsck(db: str) -> tuple[list[IntegrityProblem], tuple[int, int, int]]:
    async with open_store(db) as store:
        problems = await store.verify()
        if problems:
            return problems, (0, 0, 0)
        whole = await load_tree(store)
        contents = {
            message.content_hash
            for message in whole.messages.values()
            if not isinstance(message, CallMessage)
        }
        return [], (len(whole.order), len(contents), len(whole.refs))


# -- export and import --------------------------------------------------------------------------


@cli.command(short_help="Write every message and ref to a bundle.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    metavar="FILE",
    help="Write the bundle to FILE (default: standard output).",
)
@db_option
def export(output: str, db: str) -> None:
    """Write every message and ref to a bundle (JSON Lines) that `import` checks.

    Line 1 is a header: the format, the number of messages, the refs, and the sha256 of the
    rest of the file. Each further line is one message's canonical encoding, parents before
    their children. See docs/cli.md for the format.
    """
    whole = run(_export, db)
    data = _bundle.encode_bundle(whole)
    if output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with user_errors():
        _write_atomically(output, data)
    click.echo(
        f"exported {len(whole.order)} messages and {len(whole.refs)} refs to {output}", err=True
    )


async def _export(db: str) -> Tree:
    async with open_store(db) as store:
        # The walk from the roots is all that export reads: only a sound store guarantees
        # that it reaches every message (a damaged index of parents hides some).
        problems = await store.verify()
        if problems:
            count, first = len(problems), problems[0]
            raise UserError(
                f"{shown(db)} has {count} problem{'s' if count != 1 else ''}, so nothing was "
                f"exported: {first.hash or shown(db)}: {first.reason} (`agentforum fsck"
                f"{db_hint(db)}` lists every problem)"
            )
        return await load_tree(store)


def _write_atomically(path: str, data: bytes) -> None:
    # Write beside the target, then rename: the file is the whole bundle or what it was.
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".agentforum-export-", dir=directory)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:  # named after the file the user asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, path) from exc


@cli.command(name="import", short_help="Check a bundle, then add it to the database.")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@db_option
def import_(file: str, db: str) -> None:
    """Check a bundle written by `export`, then add its messages and refs to the database.

    Every line is checked before anything is written: the header's message count and
    sha256, each message's canonical encoding, and every parent, reply_to and original link
    (to a message of the bundle or of the database). A bundle that fails any check is
    refused whole and the database is left as it was; a missing database is created only
    for a sound bundle. Refs of the bundle are set in the database (moved if they exist).
    """
    with user_errors():
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    source = "<stdin>" if file == "-" else file
    bundle, moved = run(_import, db, data, source)
    click.echo(
        f"imported {len(bundle.messages)} messages and {len(bundle.refs)} refs into {shown(db)}",
        err=True,
    )
    for name, before, after in moved:
        click.echo(f"  ref {name}: {before[:10]} -> {after[:10]}", err=True)


async def _import(
    db: str, data: bytes, source: str
) -> tuple[_bundle.Bundle, list[tuple[str, str, str]]]:
    bundle = _bundle.decode_bundle(data, source)
    for name in bundle.refs:
        await _check_ref_name(name, source)
    outside = bundle.outside_links()
    # A PostgreSQL database exists on its server; an empty one gets the schema.
    url = is_url(db)
    exists = url or await anyio.Path(db).exists()
    if outside and exists:
        async with open_store(db) as store:
            for key, where in outside.items():
                if not await _is_stored(store, key):
                    raise _bundle.BundleError(
                        f"{source}: {where} is {key}, which is not in the bundle, nor in "
                        f"{shown(db)}; nothing was imported"
                    )
    elif outside:
        key, where = next(iter(outside.items()))
        raise _bundle.BundleError(
            f"{source}: {where} is {key}, which is not in the bundle (and {shown(db)} does not "
            "exist); nothing was imported"
        )
    moved = []
    try:
        async with open_store(db, create=url or not exists) as store:
            await store.put_many(bundle.messages)
            for name, key in bundle.refs.items():
                before = await store.get_ref(name)
                await store.set_ref(name, key)
                if before is not None and before != key:
                    moved.append((name, before, key))
    except BaseException:
        if not exists:  # a database this import created (on a full disk, say) goes too
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    await anyio.Path(f"{db}{suffix}").unlink()
        raise
    return bundle, moved


async def _is_stored(store: MessageStore, key: str) -> bool:
    try:
        await store.get(key)
    except MessageNotFoundError:
        return False
    return True


async def _check_ref_name(name: str, source: str) -> None:
    # The rules for ref names are the stores' own: try the name on a scratch store.
    scratch = MemoryStore()
    root = Message(content="", sender="")
    await scratch.put(root)
    try:
        await scratch.set_ref(name, root.hash)
    except ValueError:
        raise _bundle.BundleError(
            f"{source}: the header names an invalid ref {name!r}; nothing was imported"
        ) from None


# -- graph --------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--format",
    "form",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="mermaid (renders on GitHub in a ```mermaid block) or dot (Graphviz).",
)
@db_option
def graph(form: Literal["mermaid", "dot"], db: str) -> None:
    """Print the tree as a diagram: Mermaid or Graphviz DOT.

    Nodes are messages (short hash, kind, sender, start of content); solid edges go from
    parent to child, dotted ones from a forwarded message to its original.
    """
    whole = run(_tree, db)
    short = short_length(whole.order)
    render = _graph.mermaid if form == "mermaid" else _graph.dot
    click.echo(render(whole, short), nl=False)


# -- demo ---------------------------------------------------------------------------------------


@cli.command(short_help="Watch a scripted multi-agent conversation.")
@click.option("--fast", is_flag=True, help="No delay between tokens.")
@db_option
def demo(fast: bool, db: str) -> None:
    """Watch a scripted multi-agent conversation stream, then explore what it wrote.

    Offline and deterministic: a scripted model, no network, no keys. An assistant
    delegates to a researcher and a critic (their tokens stream through it), a search tool
    fails (the error is recorded in the tree), and a second question branches off the
    first answer. The messages go to the database (created if missing), refs demo/first
    and demo/second point at the two branches, and the tree is printed at the end.
    """
    run(functools.partial(run_demo, db, stdout(), fast=fast))


# -- chat ---------------------------------------------------------------------------------------


@cli.command(short_help="Chat with a model in the terminal; resume a past chat.")
@click.option(
    "--resume",
    metavar="REF",
    help="Go on from the message REF names: a ref (chat/3, chat/latest) or a hash or prefix.",
)
@click.option(
    "--model",
    metavar="NAME",
    help="The model to ask (default: $AGENTFORUM_MODEL, else gpt-4o-mini).",
)
@db_option
def chat(resume: str | None, model: str | None, db: str) -> None:
    """Chat with a language model in the terminal; the conversation is kept in the database.

    The model is the OpenAI-compatible one when OPENAI_API_KEY or OPENAI_BASE_URL is set
    (OpenAI, or a local server), else a scripted stand-in that works offline. Type `exit`
    or Ctrl-D to leave; end a line with a backslash to go on to the next.

    Each new conversation gets a ref, chat/1, chat/2, ...; after every turn it and
    chat/latest point at the conversation's last message. --resume REF prints the
    conversation that ends at REF and goes on from there, advancing REF when it is a
    chat/<n> ref (else the chat/<n> ref already at that message, or a new one).
    """
    session = Session(db, resume)
    try:
        run(functools.partial(run_chat, session, model))
    finally:  # however the chat ended (exit, Ctrl-D, Ctrl-C, an error): how to go on
        farewell = session.farewell()
        if farewell is not None:
            click.echo(farewell)


# -- the commands of other modules (they register themselves on `cli`) -------------------------

from . import _compare, _gc, _mcp, _sync, _ui  # noqa: E402, F401
