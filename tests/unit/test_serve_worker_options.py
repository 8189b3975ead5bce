"""`serve --workers N` gives every worker every option of `serve` (issue 21: `--token-file` was left out,
and two workers answered without a token), and the token never on a command line."""

from __future__ import annotations

import argparse
import os

import pytest

from otel_context.cli import SECRET_OPTIONS, SUPERVISOR_ONLY, build_parser, hand_token_to_workers, worker_arguments
from otel_context.environment_variables import OTEL_CONTEXT_SERVE_TOKEN, OTEL_CONTEXT_SERVE_TOKEN_FILE


def serve_options() -> tuple[argparse.Action, ...]:
    return build_parser().parse_args(["serve"]).serve_options


def given(action: argparse.Action) -> list[str]:
    """A value for the option that differs from its default, as a command line would give it."""
    option = action.option_strings[-1]
    if action.nargs == 0:  # a flag
        return [option]
    if action.choices:
        return [option, str(list(action.choices)[-1])]
    if action.type in (int, float):
        return [option, "7"]
    return [option, f"given-{action.dest}"]


def test_the_options_set_apart_are_options_of_serve():
    """A renamed option left in SUPERVISOR_ONLY or SECRET_OPTIONS would reach the workers after all."""
    names = {action.dest for action in serve_options()}
    assert names >= SUPERVISOR_ONLY | SECRET_OPTIONS
    assert not SUPERVISOR_ONLY & SECRET_OPTIONS


def test_every_option_of_serve_reaches_the_workers_as_given_but_ports_workers_and_secrets():
    parser = build_parser()
    argv = ["serve"] + [word for action in serve_options() for word in given(action)]
    supervisor = parser.parse_args(argv)
    worker = parser.parse_args(["serve", *worker_arguments(supervisor)])
    for action in serve_options():
        if action.dest in SUPERVISOR_ONLY | SECRET_OPTIONS:
            assert getattr(worker, action.dest) == action.default, action.dest
        else:
            assert getattr(worker, action.dest) == getattr(supervisor, action.dest), action.dest
    assert "given-token" not in worker_arguments(supervisor)


def test_options_not_given_are_not_passed_on():
    """A worker then reads the same environment as its supervisor, so its variables still apply."""
    assert worker_arguments(build_parser().parse_args(["serve", "--workers", "2"])) == []


@pytest.mark.parametrize("token", ["from-a-flag-or-file", None])
def test_the_token_goes_to_the_workers_in_their_environment(monkeypatch, token):
    monkeypatch.setenv(OTEL_CONTEXT_SERVE_TOKEN_FILE, "/run/secrets/token")
    monkeypatch.setenv(OTEL_CONTEXT_SERVE_TOKEN, "an-older-token")
    hand_token_to_workers(token)
    assert os.environ.get(OTEL_CONTEXT_SERVE_TOKEN) == token  # None: no token, so none inherited either
    assert OTEL_CONTEXT_SERVE_TOKEN_FILE not in os.environ  # read once, by the supervisor
