"""A local OpenAI-compatible server for `ChatOpenAI` and `OpenAI` (LangChain's `langchain-openai`): no network.

It answers `POST /v1/chat/completions` (plain and `stream: true`) and `POST /v1/completions` from a
script of replies, in order: a reply is text, or tool calls (`{"name": ..., "args": {...}}`). Each answer
reports usage (`usage_for`), so token counts can be checked. Runs on a thread of its own (`with
OpenAIStub([...]) as stub: ChatOpenAI(base_url=stub.url, api_key="stub", ...)`), or as a script for
subprocess apps (`python -m tests.support.openai_stub PORT REPLY...`).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = str | list[dict[str, Any]]  # text, or tool calls `{"name", "args"}`
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7


def usage_for(_: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


class OpenAIStub:
    """Scripted replies served over loopback HTTP; `requests` keeps every request body it was sent."""

    def __init__(self, replies: Sequence[Reply], model: str = "gpt-4o-mini-2024-07-18") -> None:
        self.replies = list(replies)
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._position = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                stub.requests.append(body)
                reply = stub._next()
                if self.path.endswith("/chat/completions"):
                    if body.get("stream"):
                        self._stream(stub._chunks(reply))
                        return
                    self._json(stub._chat(reply))
                elif self.path.endswith("/completions"):
                    self._json(stub._completion(reply))
                else:
                    self.send_error(404)

            def _json(self, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, chunks: list[dict[str, Any]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next(self) -> Reply:
        with self._lock:
            reply = self.replies[self._position % len(self.replies)]
            self._position += 1
            return reply

    def _message(self, reply: Reply) -> tuple[dict[str, Any], str]:
        if isinstance(reply, str):
            return {"role": "assistant", "content": reply}, "stop"
        calls = [
            {
                "id": f"call_{index}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call.get("args", {}))},
            }
            for index, call in enumerate(reply, start=1)
        ]
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"

    def _chat(self, reply: Reply) -> dict[str, Any]:
        message, finish = self._message(reply)
        return {
            "id": f"chatcmpl-{self._position}",
            "object": "chat.completion",
            "created": 1_795_000_000,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage_for(reply),
        }

    def _chunks(self, reply: Reply) -> list[dict[str, Any]]:
        message, finish = self._message(reply)
        base = {"id": f"chatcmpl-{self._position}", "object": "chat.completion.chunk", "created": 1_795_000_000}
        base["model"] = self.model
        text = message.get("content") or ""
        deltas = [{"role": "assistant", "content": ""}]
        deltas += [{"content": text[i : i + 4]} for i in range(0, len(text), 4)]
        if message.get("tool_calls"):
            deltas.append({"tool_calls": [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]})
        chunks = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        chunks.append({**base, "choices": [], "usage": usage_for(reply)})
        return chunks

    def _completion(self, reply: Reply) -> dict[str, Any]:
        return {
            "id": f"cmpl-{self._position}",
            "object": "text_completion",
            "created": 1_795_000_000,
            "model": "gpt-3.5-turbo-instruct",
            "choices": [{"index": 0, "text": reply if isinstance(reply, str) else "", "finish_reason": "stop"}],
            "usage": usage_for(reply),
        }

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


if __name__ == "__main__":  # python -m tests.support.openai_stub REPLY...: prints its URL, serves until killed
    with OpenAIStub([json.loads(a) if a.startswith("[") else a for a in sys.argv[1:]]) as running:
        print(running.url, flush=True)
        threading.Event().wait()
