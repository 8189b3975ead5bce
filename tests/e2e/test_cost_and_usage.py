"""Cost per thread and usage counted once: real LangChain runs with usage, in process and in the sidecar."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import genai_prices
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from ..support.threads import read_threads


class PricedModel(GenericFakeChatModel):
    """A fake chat model that names its model (as `ChatOpenAI` does) and reports usage like a provider."""

    model_name: str = "gpt-4o"

    def _get_ls_params(self, stop=None, **kwargs):
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_model_name"] = self.model_name
        return params


def model(name: str, answer: str, inputs: int, outputs: int, cache_read: int = 0) -> PricedModel:
    usage = {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}
    if cache_read:
        usage["input_token_details"] = {"cache_read": cache_read}
    return PricedModel(model_name=name, messages=iter([AIMessage(content=answer, usage_metadata=usage)]))


def expected_price(name: str, started_at: str, **usage: int) -> Decimal:
    moment = datetime.fromisoformat(started_at.replace("Z", "+00:00")).astimezone(timezone.utc)
    return genai_prices.calc_price(genai_prices.Usage(**usage), name, genai_request_timestamp=moment).total_price


def two_model_chain(first: PricedModel, second: PricedModel):
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    draft = prompt | first | StrOutputParser()
    return draft | RunnableLambda(lambda text: [("human", f"Polish: {text}")]) | second | StrOutputParser()


def test_cost_per_thread_and_per_model_with_cached_tokens(make_pipeline, client):
    pipeline = make_pipeline()
    chain = two_model_chain(
        model("gpt-4o", "draft", 1000, 100, cache_read=400), model("claude-3-5-haiku-latest", "final", 200, 50)
    )
    chain.invoke({"question": "Write a haiku"})
    pipeline.flush()
    (thread,) = read_threads(client)
    meta = thread.metadata
    gpt = expected_price("gpt-4o", meta["started_at"], input_tokens=1000, output_tokens=100, cache_read_tokens=400)
    haiku = expected_price("claude-3-5-haiku-latest", meta["started_at"], input_tokens=200, output_tokens=50)
    assert gpt < expected_price("gpt-4o", meta["started_at"], input_tokens=1000, output_tokens=100)  # cache counts
    assert Decimal(meta["cost_usd.gpt-4o"]) == gpt
    assert Decimal(meta["cost_usd.claude-3-5-haiku-latest"]) == haiku
    assert Decimal(meta["cost_usd"]) == gpt + haiku
    assert meta["cost_source"] == f"genai-prices {genai_prices.__version__} (bundled prices)"
    assert (meta["input_tokens"], meta["output_tokens"], meta["cache_read_tokens"]) == ("1200", "150", "400")
    assert "cost_unpriced_models" not in meta


def test_a_deployment_name_is_priced_as_its_model(make_pipeline, client):
    pipeline = make_pipeline(model_aliases="azure/my-gpt4o-deploy=gpt-4o")
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    (prompt | model("my-gpt4o-deploy", "hi", 1000, 100) | StrOutputParser()).invoke({"question": "hello"})
    pipeline.flush()
    (thread,) = read_threads(client)
    meta = thread.metadata
    assert meta["model"] == "my-gpt4o-deploy"
    assert Decimal(meta["cost_usd"]) == expected_price(
        "gpt-4o", meta["started_at"], input_tokens=1000, output_tokens=100
    )


def test_an_unknown_model_gets_no_cost_and_is_counted(make_pipeline, client):
    pipeline = make_pipeline()
    chain = two_model_chain(model("acme-llm-7", "draft", 10, 5), model("gpt-4o", "final", 1000, 100))
    chain.invoke({"question": "q"})
    pipeline.flush()
    (thread,) = read_threads(client)
    meta = thread.metadata
    assert "cost_usd" not in meta  # never a partial sum passed off as the thread's cost
    assert meta["cost_unpriced_models"] == "acme-llm-7"
    assert Decimal(meta["cost_usd.gpt-4o"]) > 0
    assert pipeline.counters.get("threads_unpriced") == 1


def test_an_agent_span_with_aggregate_usage_does_not_add_to_its_model_calls(make_pipeline, client):
    """`invoke_agent` spans (OpenAI Agents, Strands, ...) report the sum of the model calls under them."""
    pipeline = make_pipeline()
    aggregate = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "support",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 150,
    }
    with pipeline.app.tracer.start_as_current_span("invoke_agent support", attributes=aggregate):
        two_model_chain(model("gpt-4o", "draft", 1000, 100), model("gpt-4o", "final", 200, 50)).invoke(
            {"question": "q"}
        )
    pipeline.flush()
    (thread,) = read_threads(client)
    assert (thread.metadata["input_tokens"], thread.metadata["output_tokens"]) == ("1200", "150")
    assert [m.message for m in thread.messages] == ["q", "final"]
