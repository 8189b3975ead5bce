"""Reading threads back from a local Context API with the real client, as a Context user sees them."""

from __future__ import annotations

from getcontext import ContextAPI

TOKEN = "test-token-123"  # the local API's token in the tests


def read_threads(client: ContextAPI) -> list:
    """Every stored thread, in the order the app ran them, through the real client's list and detail calls."""
    listing = client.conversations(start_time="2000-01-01T00:00:00Z", per_page=1000, enforce_https=False)
    threads = [client.conversation(c.id, enforce_https=False) for c in listing.conversations or []]
    return sorted(threads, key=lambda t: (started_at(t), t.messages[0].event_timestamp))


def started_at(thread) -> str:
    """When a thread's first run started: in its metadata (a run of its own), else on its runs' messages
    (a session thread: run facts go on each run's last message)."""
    found = (thread.metadata or {}).get("started_at")
    if found:
        return found
    stamps = [(m.metadata or {}).get("started_at") for m in thread.messages]
    return min((s for s in stamps if s), default="")


def texts(thread) -> list[tuple[str | None, str | None, str | None]]:
    return [(m.type, m.role, m.message) for m in thread.messages]


def dialogue(thread) -> list[tuple[str, str]]:
    """(role, text) of a thread's messages, tool steps and events left out (a stored thread or a converted one)."""
    return [(m.role, m.message if hasattr(m, "message") else m.text) for m in thread.messages if m.type == "message"]


def turns(expected: list[list[str]]) -> list[tuple[str, str]]:
    """[[question, answer], ...] as the (role, text) pairs of a dialogue."""
    return [pair for question, answer in expected for pair in (("user", question), ("assistant", answer))]
