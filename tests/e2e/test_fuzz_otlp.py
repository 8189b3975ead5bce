"""Fuzzing the HTTP receiver (issue 11): no crash, no hang, no unbounded work, over real HTTP.

The inputs of the decoders' bounded hypothesis run (tests/unit/test_fuzz_otlp.py) posted to a running
receiver; then the corpus in `fixtures/hostile/`, which keeps the cases of issue 11 as regression
inputs, each with the status it must get.
"""

from __future__ import annotations

import gzip
import http.client
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.receiver.service import SidecarThread

from ..support.otlp_fuzz import fuzz, mutated
from ..support.paths import FIXTURES

CORPUS = FIXTURES / "hostile"


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    settings_ = resolve_receiver_settings(
        port=0, grpc_port=-1, settle_s=0.1, state_dir=str(tmp_path_factory.mktemp("state")), max_in_progress=64
    )
    delivery = resolve_settings(endpoint="http://127.0.0.1:9", token="unused", max_elapsed_s=0.1)
    with SidecarThread(settings_, delivery) as sidecar:
        yield sidecar


def post(sidecar, body: bytes, content_type: str, encoding: str = "") -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.http_port, timeout=10)
    try:
        headers = {"Content-Type": content_type, **({"Content-Encoding": encoding} if encoding else {})}
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Content-Type", "")
    finally:
        conn.close()


@fuzz(1500)
@given(
    st.binary(max_size=2048) | mutated(),
    st.sampled_from(["application/x-protobuf", "application/json", "text/plain", "application/json; charset=x"]),
    st.sampled_from(["", "gzip", "br", "GZIP"]),
)
def test_fuzz_http_receiver(receiver, body, content_type, encoding):
    if encoding.lower() == "gzip" and body[:1] != b"\x1f":
        body = gzip.compress(body)
    status, payload, answer_type = post(receiver, body, content_type, encoding)
    assert status in (200, 400, 413, 415)
    if answer_type == "application/json":
        json.loads(payload)
    else:
        assert answer_type == "application/x-protobuf"


CASES = json.loads((CORPUS / "corpus.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
def test_corpus_case_gets_its_status_quickly(receiver, case):
    body = (CORPUS / case["file"]).read_bytes()
    started = time.monotonic()
    status, payload, _ = post(receiver, body, case["content_type"], case["encoding"])
    assert time.monotonic() - started < 2.0
    assert status == case["status"], payload[:300]
