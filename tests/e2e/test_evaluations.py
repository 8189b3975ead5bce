"""GenAI evaluation results become `eval.<name>` metadata, and ratings where the user's rules say so."""

from __future__ import annotations

from langchain_core.runnables import RunnableLambda
from opentelemetry import trace

from ..support.threads import read_threads
from .test_conversations import chain


def judged(*results: dict) -> RunnableLambda:
    """An evaluator step of the app: records its results as GenAI `gen_ai.evaluation.result` events."""

    def evaluate(answer: str) -> str:
        for result in results:
            trace.get_current_span().add_event("gen_ai.evaluation.result", result)
        return answer

    return RunnableLambda(evaluate)


RELEVANT = {
    "gen_ai.evaluation.name": "relevance",
    "gen_ai.evaluation.score.value": 0.82,
    "gen_ai.evaluation.score.label": "relevant",
    "gen_ai.evaluation.explanation": "Answers the question asked.",
}
BAD_VERDICT = {"gen_ai.evaluation.name": "verdict", "gen_ai.evaluation.score.label": "bad"}


def test_evaluations_become_metadata_and_a_rating_by_threshold(make_pipeline, client):
    pipeline = make_pipeline(eval_ratings="relevance>=0.7")
    (chain("Paris") | judged(RELEVANT)).invoke({"question": "Capital of France?"})
    pipeline.flush()
    (thread,) = read_threads(client)
    meta = thread.metadata
    assert (meta["eval.relevance"], meta["eval.relevance.label"]) == ("0.82", "relevant")
    assert meta["eval.relevance.explanation"] == "Answers the question asked."
    assert meta["eval_rating"] == "1"
    assert [m.rating for m in thread.messages] == [None, 1]


def test_a_failed_check_rates_the_answer_down_and_no_rule_no_rating(make_pipeline, client):
    pipeline = make_pipeline(eval_ratings="relevance>=0.7,verdict:good=1,bad=-1")
    (chain("Lyon") | judged(RELEVANT, BAD_VERDICT)).invoke({"question": "Capital of France?"})
    (chain("Rome") | judged({"gen_ai.evaluation.name": "fluency", "gen_ai.evaluation.score.value": 3})).invoke(
        {"question": "Capital of Italy?"}
    )
    pipeline.flush()
    rated, unrated = read_threads(client)
    assert rated.metadata["eval.verdict"] == "bad" and rated.metadata["eval_rating"] == "-1"
    assert [m.rating for m in rated.messages] == [None, -1]
    assert unrated.metadata["eval.fluency"] == "3" and "eval_rating" not in unrated.metadata
    assert [m.rating for m in unrated.messages] == [None, None]
