"""Another local user (uid 65534, `nobody`), for the tests of what other users can read or plant.

Acting as another user takes root (to `chown` and to switch users with util-linux's `setpriv`).
`.ci/run` sets `OTEL_CONTEXT_SECOND_USER_TESTS=required`: the tests that need one then fail where it
is missing; elsewhere they skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

OTHER_UID = 65534
AS_OTHER = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]


def required() -> bool:
    return os.environ.get("OTEL_CONTEXT_SECOND_USER_TESTS") == "required"


def need_root() -> None:
    """Skips the calling test (fails it when required) where files cannot be given to another user."""
    if os.geteuid() != 0:
        _unavailable("not root: cannot chown to another user nor run as one")


def need_second_user() -> None:
    """Skips the calling test (fails it when required) where this process cannot act as uid 65534."""
    need_root()
    why = None
    if shutil.which("setpriv") is None:
        why = "no setpriv (Debian: util-linux)"
    else:
        probe = as_other_user("id", "-u")
        if probe.returncode != 0 or probe.stdout.strip() != str(OTHER_UID):
            why = f"setpriv cannot switch to uid {OTHER_UID}: {probe.stderr.strip() or probe.stdout.strip()}"
    if why is not None:
        _unavailable(why)


def _unavailable(why: str) -> None:
    if required():
        pytest.fail(f"OTEL_CONTEXT_SECOND_USER_TESTS=required, but {why}")
    pytest.skip(why)


def as_other_user(*command: str) -> subprocess.CompletedProcess[str]:
    """`command` run as uid 65534 (no supplementary groups), its output captured."""
    return subprocess.run([*AS_OTHER, *command], capture_output=True, text=True, timeout=60)
