"""A root chain with an empty input or output shows what its model calls were asked and answered."""

from __future__ import annotations

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda

from ..support.threads import read_threads, texts
from .test_conversations import chain


def test_an_empty_root_is_filled_from_its_model_calls_and_marked(make_pipeline, client):
    pipeline = make_pipeline()
    model = FakeListChatModel(responses=["Thinking about Paris.", "Paris it is."])

    def custom(_state: dict) -> None:  # a custom runnable: its input renders empty, its output is None
        model.invoke("Which city should I visit?")
        model.invoke("Make it short.")

    RunnableLambda(custom).invoke({})
    chain("fine").invoke({"question": "a normal run"})
    pipeline.flush()
    filled, normal = read_threads(client)
    assert texts(filled) == [
        ("message", "user", "Which city should I visit?"),
        ("message", "assistant", "Paris it is."),
    ]
    assert filled.metadata["io_source"] == "model_calls"
    assert "io_source" not in normal.metadata


def test_only_the_missing_side_is_filled(make_pipeline, client):
    pipeline = make_pipeline()
    model = FakeListChatModel(responses=["Rome."])
    RunnableLambda(lambda question: (model.invoke(question), None)[1]).invoke("Capital of Italy?")
    pipeline.flush()
    (thread,) = read_threads(client)
    assert texts(thread) == [("message", "user", "Capital of Italy?"), ("message", "assistant", "Rome.")]
    assert thread.metadata["io_source"] == "model_calls"
