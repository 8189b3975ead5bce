"""A WSGI app that runs a LangChain chain per request, for `gunicorn --preload` (set up once, before the fork)."""

from __future__ import annotations

import os
from urllib.parse import parse_qs

from tests.apps.common import chain, setup

provider, exporter = setup(schedule_delay_millis=50)  # in the master: workers are forked from here
chain("warm-up").invoke({"question": f"preload {os.getpid()}"})  # the master's own run, before any fork


def application(environ, start_response):
    question = parse_qs(environ.get("QUERY_STRING", "")).get("q", ["?"])[0]
    answer = chain(f"answer to {question}").invoke({"question": question})
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Worker", str(os.getpid()))])
    return [answer.encode()]
