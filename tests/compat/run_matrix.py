"""The compatibility matrix: real LangChain apps under every supported instrumentation release.

    python tests/compat/run_matrix.py                 # the whole matrix, 2 environments at a time
    python tests/compat/run_matrix.py --only 0.40 0.62 --update-fixtures

Per release (one per minor series, from the declared floor to the newest, plus OpenInference's oldest
importable and newest), an environment under `${OTEL_CONTEXT_CACHE:-~/.cache/otel-context}/compat/<key>`
(key: a hash of the pins and of otel-context's own dependency list; reused when present) holds the pins
that make that release importable today plus otel-context's dependencies; otel-context itself comes
from this checkout (`PYTHONPATH`), so a cached environment serves any clone. In it, `apps.py` runs
every app, captures its spans with the real SDK and delivers them with the real `ContextSpanExporter`
to a real local Context API; the threads read back must be the expected ones (`apps.EXPECTED`, less
what `Env.gaps` says that release does not record). Exit status 1 when any app under any release
gives the wrong thread (or an environment cannot be built). `--update-fixtures` copies the captured
spans to `tests/fixtures/<instrumentation>/<env>/`, which the main suite replays through conversion.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from apps import EXPECTED, EXPECTED_METADATA  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
TOKEN = "compat-token"
PYTHON = os.environ.get("OTEL_CONTEXT_COMPAT_PYTHON", sys.executable)


@dataclass(frozen=True)
class Env:
    """One release of a LangChain instrumentation, with what makes it importable and what it lacks."""

    release: str
    core: str  # langchain-core series: "0.3" or "1"
    pins: tuple[str, ...] = ()
    instrumentation: str = "openllmetry"
    gaps: dict[str, str] = field(default_factory=dict)  # app -> what that release does not record (README)
    missing: frozenset[str] = frozenset()  # apps that release records no span for at all: no thread (README)
    # apps whose one model call that release puts in a trace of its own (README): the run's thread holds its
    # question only, and the call is a thread of its own
    unlinked: frozenset[str] = frozenset()
    beside: str = ""  # an OpenLLMetry release instrumented beside it (both loaded, as zero-code does)
    representative: bool = False  # also run by `--quick` (every CI run)

    @property
    def version(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.release.split("."))

    @property
    def name(self) -> str:
        beside = f"+openllmetry-{self.beside}" if self.beside else ""
        return f"{self.release}{beside}-lc{self.core}"

    @property
    def package(self) -> str:
        if self.instrumentation == "openinference":
            return f"openinference-instrumentation-langchain=={self.release}"
        if self.instrumentation == "official":
            return f"opentelemetry-instrumentation-genai-langchain=={self.release}"
        return f"opentelemetry-instrumentation-langchain=={self.release}"

    def requirements(self) -> list[str]:
        core = "langchain-core>=0.3,<0.4" if self.core == "0.3" else "langchain-core>=1,<2"
        beside = [f"opentelemetry-instrumentation-langchain=={self.beside}"] if self.beside else []
        return [self.package, *beside, core, *self.pins]

    @property
    def apps_mode(self) -> str:
        """What `apps.py --instrumentation` instruments."""
        return "both" if self.beside else self.instrumentation


NO_METADATA = "records no LangChain run metadata (no traceloop.association.properties.*; from 0.44 on)"
NO_METADATA_OI = "records no LangChain run metadata (no `metadata` attribute)"
NO_METADATA_OFFICIAL = "records of the run metadata only a session id (`gen_ai.conversation.id`): no user_id"
NO_METADATA_OFFICIAL_1_1 = "records no run metadata (no `gen_ai.conversation.id` before 1.2b0): no session, no user_id"
OFFICIAL = ("1.0b0", "1.1b1", "1.2b0", "1.3b0")  # the newest of each 1.x series (prereleases), as for OpenLLMetry
# `opentelemetry._events`, which 0.44-0.47 import, is gone from opentelemetry-api 1.39 on
OTEL_WITH_EVENTS = ("opentelemetry-api<1.39", "opentelemetry-sdk<1.39")
MATRIX: tuple[Env, ...] = (
    # OpenLLMetry: the newest release of every minor series from the declared floor (pyproject.toml)
    Env("0.40.14", "0.3", ("wrapt<2",), gaps={"chain_metadata": NO_METADATA}, representative=True),
    Env("0.40.14", "1", ("wrapt<2",), gaps={"chain_metadata": NO_METADATA}),
    Env("0.41.0", "0.3", ("wrapt<2", *OTEL_WITH_EVENTS), gaps={"chain_metadata": NO_METADATA}),
    Env("0.42.0", "0.3", ("wrapt<2", *OTEL_WITH_EVENTS), gaps={"chain_metadata": NO_METADATA}),
    Env("0.43.1", "0.3", ("wrapt<2", *OTEL_WITH_EVENTS), gaps={"chain_metadata": NO_METADATA}),
    Env("0.44.3", "0.3", ("wrapt<2", *OTEL_WITH_EVENTS)),
    Env("0.45.6", "0.3", ("wrapt<2", *OTEL_WITH_EVENTS)),
    Env("0.46.2", "0.3", ("wrapt<2", *OTEL_WITH_EVENTS)),
    Env("0.47.5", "0.3", ("wrapt<2", *OTEL_WITH_EVENTS), representative=True),
    Env("0.48.2", "0.3", ("wrapt<2",)),
    Env("0.49.8", "0.3", ("wrapt<2",)),
    Env("0.50.1", "0.3", ("wrapt<2",)),
    Env("0.51.1", "0.3", ("wrapt<2",)),
    Env("0.52.6", "0.3", ("wrapt<2",)),
    Env("0.52.6", "1", ("wrapt<2",)),
    Env("0.53.4", "1", ("wrapt<2",)),
    Env("0.54.0", "1", ("wrapt<2",), representative=True),
    Env("0.55.0", "1", ("wrapt<2",)),
    Env("0.56.1", "1", ("wrapt<2",)),
    Env("0.57.0", "1", ("wrapt<2",)),
    Env("0.58.1", "1", ("wrapt<2",)),
    Env("0.59.2", "1", ("wrapt<2",)),
    Env("0.60.0", "1", ("wrapt<2",)),
    Env("0.61.0", "1"),
    Env("0.62.4", "1", representative=True),
    Env("0.62.4", "0.3"),
    # OpenInference: the oldest release still importable today, and the newest
    Env("0.1.0", "0.3", ("wrapt<2",), instrumentation="openinference", gaps={"chain_metadata": NO_METADATA_OI}),
    Env("0.1.80", "1", instrumentation="openinference", representative=True),
    # OpenTelemetry's own (a prerelease: pinned exactly), alone and beside OpenLLMetry's; it instruments
    # LangChain only with the `langchain` package installed (its declared dependency)
    *(
        Env(
            release,
            "1",
            ("langchain>=1,<2",),
            instrumentation="official",
            gaps={"chain_metadata": NO_METADATA_OFFICIAL if release >= "1.2" else NO_METADATA_OFFICIAL_1_1},
            missing=frozenset({"completion"}),
            unlinked=frozenset({"chain_async"}) if release < "1.2" else frozenset(),
            representative=release in (OFFICIAL[0], OFFICIAL[-1]),
        )
        for release in OFFICIAL
    ),
    *(
        Env(
            release,
            "1",
            ("langchain>=1,<2",),
            instrumentation="official",
            beside="0.62.4",
            representative=release in (OFFICIAL[0], OFFICIAL[-1]),
        )
        for release in OFFICIAL
    ),
)
# OpenTelemetry's own records a model call only for a model that names one (ChatOpenAI's `model_name`, ...):
# the apps give their fake chat models a name under it; it records no text-completion model at all.


def cache_root() -> Path:
    return Path(os.environ.get("OTEL_CONTEXT_CACHE") or Path.home() / ".cache" / "otel-context") / "compat"


def own_dependencies() -> list[str]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = [d for d in project["dependencies"] if not d.startswith("opentelemetry-instrumentation-langchain")]
    return deps


def env_key(env: Env) -> str:
    text = json.dumps([env.requirements(), own_dependencies(), sys.version_info[:2]])
    return f"{env.name}-{env.instrumentation}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def uv() -> str | None:
    beside = Path(sys.executable).with_name("uv")
    return str(beside) if beside.exists() else shutil.which("uv")


def ensure_env(env: Env, log: list[str]) -> Path:
    """The environment's directory, built unless a complete one is cached."""
    path = cache_root() / env_key(env)
    if (path / "ready").exists():
        return path
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    requirements = [*env.requirements(), *own_dependencies()]
    tool = uv()
    if tool:
        commands = [
            [tool, "venv", "-q", "--python", PYTHON, str(building)],
            [tool, "pip", "install", "-q", "--python", str(building / "bin" / "python"), *requirements],
        ]
    else:
        commands = [
            [PYTHON, "-m", "venv", str(building)],
            [str(building / "bin" / "python"), "-m", "pip", "install", "-q", *requirements],
        ]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            raise RuntimeError(f"{env.name}: {' '.join(command[:3])} failed:\n{result.stderr[-3000:]}")
    (building / "ready").write_text("\n".join(requirements) + "\n")
    # Built aside, then renamed: an interrupted build never looks complete. The apps run as
    # `<env>/bin/python`, which finds its prefix from its own location, so the rename is harmless.
    try:
        building.rename(path)
    except OSError:  # another run built it meanwhile
        shutil.rmtree(building, ignore_errors=True)
        if not (path / "ready").exists():
            raise
    log.append(f"built in {path}")
    return path


def read_threads(url: str) -> list[dict]:
    request = urllib.request.Request(f"{url}/api/v1/conversations?per_page=1000")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["conversations"]


def messages(thread: dict) -> list[tuple[str, str | None, str | None]]:
    return [(m.get("type") or "message", m.get("role"), m.get("message")) for m in thread.get("messages") or []]


def check(env: Env, threads: list[dict]) -> list[str]:
    """What is wrong with the threads the apps gave under `env` (empty when all is right)."""
    problems = []
    for app, expected in EXPECTED.items():
        question = expected[0 if expected[0][1] != "system" else 1][2]
        found = [t for t in threads if any(m[2] == question for m in messages(t))]
        if app in env.missing:
            if found:
                problems.append(f"{app}: {len(found)} threads where that release records nothing")
            continue
        if len(found) != 1:
            problems.append(f"{app}: {len(found)} threads (expected 1)")
            continue
        thread = found[0]
        if app in env.unlinked:
            expected = expected[:1]
        if messages(thread) != [(t, r, m) for t, r, m in expected]:
            problems.append(f"{app}: messages {messages(thread)}")
        if app in env.gaps:
            continue
        for key, value in EXPECTED_METADATA.get(app, {}).items():
            if (thread.get("metadata") or {}).get(key) != value:
                problems.append(f"{app}: metadata {key}={thread.get('metadata', {}).get(key)!r}, expected {value!r}")
    if len(threads) != len(EXPECTED) - len(env.missing) + len(env.unlinked):
        problems.append(
            f"{len(threads)} threads in all, expected {len(EXPECTED) - len(env.missing) + len(env.unlinked)}"
        )
    return problems


def run_env(env: Env, update_fixtures: bool) -> tuple[Env, list[str], list[str], float]:
    sys.path.insert(0, str(REPO))
    from otel_context.local_api import LocalContextAPI

    started = time.monotonic()
    log: list[str] = []
    try:
        path = ensure_env(env, log)
    except RuntimeError as exc:
        return env, [str(exc)], log, time.monotonic() - started
    out = Path(tempfile.mkdtemp(prefix=f"compat-{env.name}-"))
    with LocalContextAPI(token=TOKEN) as api:
        command = [
            str(path / "bin" / "python"),
            str(HERE / "apps.py"),
            "--out",
            str(out),
            "--endpoint",
            api.url,
            "--token",
            TOKEN,
            "--instrumentation",
            env.apps_mode,
        ]
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACELOOP_", "CONTEXT_"))}
        environ.update(PYTHONPATH=str(REPO), OTEL_EXPORTER_CONTEXT_ROOT_WAIT="500")
        result = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            return env, [f"apps.py exited {result.returncode}:\n{result.stderr[-3000:]}"], log, 0.0
        threads = read_threads(api.url)
    problems = check(env, threads)
    if update_fixtures:
        target = FIXTURES / env.instrumentation / env.name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(out, target)
        log.append(f"fixtures written to {target.relative_to(REPO)}")
    shutil.rmtree(out, ignore_errors=True)
    return env, problems, log, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="releases (or their prefixes, e.g. 0.40) to run")
    parser.add_argument("--quick", action="store_true", help="only the representative subset")
    parser.add_argument("--update-fixtures", action="store_true", help="write captured spans to tests/fixtures")
    parser.add_argument("--jobs", type=int, default=2, help="environments run at a time (default 2)")
    args = parser.parse_args(argv)
    chosen = [
        env
        for env in MATRIX
        if (not args.quick or env.representative)
        and (not args.only or any(env.release.startswith(p) or env.name == p for p in args.only))
    ]
    started = time.monotonic()
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for env, problems, log, seconds in pool.map(lambda e: run_env(e, args.update_fixtures), chosen):
            status = "ok" if not problems else "FAILED"
            print(f"{env.instrumentation} {env.name}: {status} ({seconds:.1f} s)", flush=True)
            for line in [*log, *problems]:
                print(f"    {line}", flush=True)
            failed += bool(problems)
    print(
        f"compat matrix: {len(chosen) - failed}/{len(chosen)} environments passed in {time.monotonic() - started:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
