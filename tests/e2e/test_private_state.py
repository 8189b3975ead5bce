"""What `otel-context serve`, the local API and the exporter write holds conversations: private to their user.

Issue 21, points 4 and 5, against real processes run under umask 022 (the usual default): directories
0700 and databases 0600 (SQLite's `-wal` and `-shm` too); a state or spool directory another user owns
or may write is refused (one line, exit 1), as is a database that is a symlink; in an app, such a spool
or session book costs the spool or the book (one error line), never the app. Where a second user is
needed (uid 65534 through `setpriv`), see `tests/support/second_user.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from getcontext import ContextAPI
from getcontext.generated.models import Message, Thread
from getcontext.token import Credential
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from ..support.paths import REPO
from ..support.second_user import OTHER_UID, as_other_user, need_root, need_second_user
from ..support.sidecar import clean_env, free_port
from ..support.threads import TOKEN, dialogue, read_threads
from ..support.waiting import wait_for

SECRET = "the secret recipe of Alice's socks"
UMASK = 0o022
SQLITE = ("", "-wal", "-shm")  # a database and the files SQLite keeps beside it in WAL mode
SPOOL_FILES = [f"otel-context-{name}.db{suffix}" for name in ("spool", "receiver-wal") for suffix in SQLITE]
STATE_FILES = [f"sessions.db{suffix}" for suffix in SQLITE]


def secret_chain() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "What should I call {product}?")])
    (prompt | FakeListChatModel(responses=["Rainbow Threads"]) | StrOutputParser()).invoke({"product": SECRET})


def serve_command(endpoint: str, spool: Path, state: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "otel_context.cli",
        "serve",
        "--port",
        "0",
        "--grpc-port",
        "-1",
        "--settle-ms",
        "100",
    ]
    return [*command, "--endpoint", endpoint, "--spool-dir", str(spool), "--state-dir", str(state)]


SERVE_ENV = clean_env(OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN, OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF="200")


class Serve:
    """`otel-context serve` with a spool and a state directory, as a process under umask 022."""

    def __init__(self, endpoint: str, spool: Path, state: Path, log: Path) -> None:
        with log.open("a") as stderr:
            self.proc = subprocess.Popen(
                serve_command(endpoint, spool, state),
                env=SERVE_ENV,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                umask=UMASK,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once the listeners are open
        assert "OTLP/HTTP on " in line, line + log.read_text()
        self.url = line.split("OTLP/HTTP on ", 1)[1].split("/v1/traces", 1)[0]

    def post(self, body: bytes) -> int:
        request = urllib.request.Request(
            f"{self.url}/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status

    def counters(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as response:
            return json.load(response)["counters"]

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.communicate(timeout=60)


def refused(endpoint: str, spool: Path, state: Path) -> list[str]:
    """Run `serve`, which must refuse to start: its stderr lines (exit status 1 checked)."""
    done = subprocess.run(
        serve_command(endpoint, spool, state),
        env=SERVE_ENV,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        umask=UMASK,
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert done.stdout == ""
    return done.stderr.splitlines()


def modes(*roots: Path) -> dict[str, int]:
    """Permission bits of every directory and file under (and including) `roots`, by path."""
    found = {}
    for root in roots:
        found[str(root)] = stat.S_IMODE(root.lstat().st_mode)
        for path in root.rglob("*"):
            found[str(path)] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(*roots: Path) -> None:
    for path, mode in modes(*roots).items():
        expected = 0o700 if Path(path).is_dir() else 0o600
        assert mode == expected, f"{path} is {mode:04o}, not {expected:04o}"


@pytest.fixture
def sent(capture) -> bytes:
    """A LangChain run holding SECRET, as one OTLP/protobuf request."""
    return encode_spans(capture(secret_chain)).SerializeToString()


# -- point 4: created private whatever the umask ----------------------------------------------------


def test_serve_creates_its_directories_0700_and_its_databases_0600(local_api, client, sent, tmp_path):
    var = tmp_path / "var"  # missing parents are created private too
    spool, state = var / "spool", var / "state"
    serve = Serve(local_api.url, spool, state, tmp_path / "serve.log")
    try:
        assert serve.post(sent) == 200
        assert wait_for(lambda: len(read_threads(client)) == 1, timeout=30)
        assert dialogue(read_threads(client)[0])[0] == ("user", SECRET)
        running = modes(var)
        expected = [spool / name for name in [*SPOOL_FILES, "owners"]] + [state / name for name in STATE_FILES]
        assert {str(path) for path in expected} <= set(running), sorted(running)  # each was looked at
        assert any(Path(path).suffix == ".lock" for path in running)  # the spool owner's lock file
        assert_private(var)
    finally:
        serve.stop()
    assert_private(var)  # what stays after a clean stop


@pytest.mark.parametrize("before", ["new", "left 0644 by an older version"])
def test_the_local_api_database_is_0600(tmp_path, before):
    db = tmp_path / "threads.db"
    if before != "new":
        db.touch()
        db.chmod(0o644)
    command = [sys.executable, "-m", "otel_context.cli", "local-api", "--port", "0", "--db", str(db), "--token", TOKEN]
    server = subprocess.Popen(command, env=clean_env(), cwd=REPO, stdout=subprocess.PIPE, text=True, umask=UMASK)
    try:
        line = server.stdout.readline()
        assert line.startswith("Local Context API listening on http://127.0.0.1:"), line
        api = ContextAPI(credential=Credential(TOKEN), endpoint=line.rsplit(" ", 1)[1].strip(), retry_total=0)
        api.log.conversation_thread(
            body={"conversation": Thread(id="t-1", messages=[Message(role="user", message=SECRET)])},
            enforce_https=False,
        )
        assert {path.name: mode for path, mode in ((Path(p), m) for p, m in modes(db.parent).items())} == {
            tmp_path.name: stat.S_IMODE(tmp_path.stat().st_mode),  # the developer's directory, left as it is
            "threads.db": 0o600,
            "threads.db-wal": 0o600,
            "threads.db-shm": 0o600,
        }
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


# -- point 4: another user cannot read them -----------------------------------------------------------


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A directory every user may enter (0755 under /tmp), unlike pytest's own (0700)."""
    base = Path(tempfile.mkdtemp(prefix="otel-context-private-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def test_another_user_cannot_read_the_conversations(local_api, sent, shared_base):
    need_second_user()
    control = shared_base / "control.txt"
    control.write_text("readable")
    control.chmod(0o644)
    assert as_other_user("cat", str(control)).stdout == "readable"  # the other user reaches this directory

    spool, state = shared_base / "spool", shared_base / "state"
    local_api.set_faults(down_s=120)  # the thread stays in the spool: something there is worth stealing
    serve = Serve(local_api.url, spool, state, shared_base / "serve.log")
    try:
        assert serve.post(sent) == 200
        assert wait_for(lambda: serve.counters()["threads_spooled"] == 1, timeout=30)
        files = [spool / name for name in SPOOL_FILES] + [state / name for name in STATE_FILES]
        assert any(SECRET.encode() in path.read_bytes() for path in files)  # root reads it: it is there

        for directory in (spool, state):
            listing = as_other_user("ls", str(directory))
            assert listing.returncode != 0 and "Permission denied" in listing.stderr, listing
        # Even with the directories opened for passage (as a home directory often is), the files stay shut.
        for directory in (spool, state):
            directory.chmod(0o711)
        inside = spool / "control.txt"
        inside.write_text("readable")
        inside.chmod(0o644)
        assert as_other_user("cat", str(inside)).stdout == "readable"  # the other user now reaches the files
        for path in files:
            read = as_other_user("cat", str(path))
            assert read.returncode != 0 and "Permission denied" in read.stderr, (path, read)
            assert SECRET not in read.stdout
    finally:
        local_api.clear_faults()
        serve.stop()


# -- point 5: directories and files that are not ours --------------------------------------------------


def spooled_and_killed(spool: Path, state: Path, sent: bytes, log: Path) -> None:
    """A sidecar that could deliver nothing, killed with a thread in its spool (the row an attacker plants)."""
    serve = Serve(f"http://127.0.0.1:{free_port()}", spool, state, log)
    try:
        assert serve.post(sent) == 200
        assert wait_for(lambda: serve.counters()["threads_spooled"] == 1, timeout=30)
    finally:
        serve.stop(kill=True)


def chown_tree(root: Path, uid: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)


@pytest.mark.parametrize(
    ("which", "how"),
    [("spool", "mode 0777"), ("spool", f"owned by uid {OTHER_UID}"), ("state", "mode 0777")],
)
def test_a_directory_another_user_may_write_is_refused(local_api, client, sent, tmp_path, which, how):
    spool, state = tmp_path / "spool", tmp_path / "state"
    spooled_and_killed(spool, state, sent, tmp_path / "serve.log")
    directory = spool if which == "spool" else state
    if how == "mode 0777":
        directory.chmod(0o777)
    else:
        need_root()
        chown_tree(directory, OTHER_UID)

    (line,) = refused(local_api.url, spool, state)
    assert line.startswith(f"otel-context serve: {directory}: directory "), line
    assert "refused" in line
    assert read_threads(client) == []  # the spooled row was not uploaded with our token


@pytest.mark.parametrize(
    "name", ["spool/otel-context-spool.db", "spool/otel-context-receiver-wal.db", "state/sessions.db"]
)
def test_a_database_that_is_a_symlink_is_refused(local_api, tmp_path, name):
    spool, state, elsewhere = tmp_path / "spool", tmp_path / "state", tmp_path / "elsewhere"
    for directory in (spool, state, elsewhere):
        directory.mkdir(mode=0o700)
    (tmp_path / name).symlink_to(elsewhere / "conversations.db")

    (line,) = refused(local_api.url, spool, state)
    link = tmp_path / name
    assert line == f"otel-context serve: {link}: a symbolic link, refused (the database must be a file of its own)"
    assert list(elsewhere.iterdir()) == []  # nothing created where the link points


# -- point 5 in an app: the spool or the book is lost, never the app ---------------------------------

APP = """
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from otel_context import ContextSpanExporter

exporter = ContextSpanExporter(register_metrics=False)
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
LangchainInstrumentor().instrument(tracer_provider=provider)
FakeListChatModel(responses=["Rainbow Threads"]).invoke("What should I call my socks?")
provider.shutdown()
print("spool:", exporter.delivery.spool is not None, "uploaded:", exporter.stats()["threads_uploaded"])
"""


@pytest.mark.parametrize("store", ["spool", "session book"])
def test_in_an_app_a_refused_directory_costs_the_store_not_the_app(local_api, client, tmp_path, store):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    variable = (
        {"OTEL_EXPORTER_CONTEXT_SPOOL_DIR": str(shared)}
        if store == "spool"
        else {"OTEL_EXPORTER_CONTEXT_SESSION_DB": str(shared / "sessions.db")}
    )
    env = clean_env(OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api.url, OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN, **variable)
    app = subprocess.run(
        [sys.executable, "-c", APP], env=env, cwd=REPO, capture_output=True, text=True, timeout=120, umask=UMASK
    )
    assert app.returncode == 0, app.stderr[-3000:]
    assert app.stdout.split() == ["spool:", "False", "uploaded:", "1"]
    (line,) = [line for line in app.stderr.splitlines() if "otel-context" in line]
    assert line.startswith(f"otel-context: {shared}: directory writable by group or others (mode 0777), refused")
    assert line.endswith("(no spool)" if store == "spool" else "sessions stay in this process's memory")
    assert list(shared.iterdir()) == []  # nothing written where other users could read or plant it
    assert [dialogue(t)[-1] for t in read_threads(client)] == [("assistant", "Rainbow Threads")]
