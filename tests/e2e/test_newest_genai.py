"""The newest GenAI conventions end to end: a real LangChain run with images, in process and in the sidecar
(the constructed fixtures of fixtures/genai/ are read in tests/unit/test_newest_genai.py)."""

from __future__ import annotations

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage

from ..support.threads import read_threads, texts

# a 1x1 PNG
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def test_images_in_a_langchain_run_arrive_as_placeholders(make_pipeline, client):
    pipeline = make_pipeline()
    question = HumanMessage(
        content=[
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source_type": "base64", "mime_type": "image/png", "data": PIXEL},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PIXEL}"}},
        ]
    )
    FakeListChatModel(responses=["Two dots."]).invoke([question])
    pipeline.flush()
    (thread,) = read_threads(client)
    assert texts(thread) == [
        ("message", "user", "What is in these?\n[image: image/png]\n[image: image/jpeg]"),
        ("message", "assistant", "Two dots."),
    ]
