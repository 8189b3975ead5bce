"""GenAI evaluation results, in settings: the user's rating rules parsed, applied, or refused once."""

from __future__ import annotations

import json
import logging

import pytest

from otel_context.config import ConfigError, resolve_settings
from otel_context.conversion.evaluations import Evaluation, RatingRule, evaluation_rating, parse_rules


def test_rules_parse_and_rate():
    rules = parse_rules("relevance>=0.7; toxicity<0.3, verdict:good=1,bad=-1,meh=0")
    assert [str(r) for r in rules] == ["relevance>=0.7", "toxicity<0.3", "verdict:good=1,bad=-1,meh=0"]
    assert evaluation_rating([Evaluation("toxicity", 0.1)], rules) == 1
    assert evaluation_rating([Evaluation("toxicity", 0.5)], rules) == -1
    assert evaluation_rating([Evaluation("verdict", label="Meh")], rules) == 0
    assert evaluation_rating([Evaluation("verdict", label="unsure")], rules) is None
    assert RatingRule("relevance", ">=", 0.7).rate(Evaluation("relevance")) is None  # no score: no rating
    with pytest.raises(ConfigError):
        resolve_settings(eval_ratings="relevance=>high")
    described = resolve_settings(eval_ratings=["relevance>=0.7", "verdict:good=1,bad=-1"]).describe()
    assert json.loads(json.dumps(described))["eval_ratings"] == ["relevance>=0.7", "verdict:good=1,bad=-1"]


def test_malformed_rules_in_the_environment_warn_once(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_CONTEXT_EVAL_RATINGS", "relevance is high")
    with caplog.at_level(logging.WARNING, logger="otel_context"):
        assert resolve_settings().eval_ratings == ()
    assert sum("OTEL_EXPORTER_CONTEXT_EVAL_RATINGS" in r.getMessage() for r in caplog.records) == 1
