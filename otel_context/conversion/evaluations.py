"""GenAI evaluation results carried by spans, and the user's rules that turn them into ratings.

The GenAI conventions record an evaluation of an operation as a `gen_ai.evaluation.result` event
(`gen_ai.evaluation.name`, `gen_ai.evaluation.score.value`, `gen_ai.evaluation.score.label`,
`gen_ai.evaluation.explanation`): on its span, or, span events being deprecated, as a log record emitted in
the span's context (trace and span id). Each becomes `eval.<name>` metadata; a rule the user sets
(`relevance>=0.7`, `toxicity<0.3`, `verdict:good=1,bad=-1`) also turns it into a rating of the answer.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..conventions.keys import (
    GEN_AI_EVALUATION_EXPLANATION,
    GEN_AI_EVALUATION_NAME,
    GEN_AI_EVALUATION_RESULT_EVENT,
    GEN_AI_EVALUATION_SCORE_LABEL,
    GEN_AI_EVALUATION_SCORE_VALUE,
)
from ..model import LogEvent, SpanEvent, SpanRecord
from ..text import as_text

_THRESHOLD = re.compile(r"^([\w.\-]+)\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)$")
_LABELS = re.compile(r"^([\w.\-]+)\s*:\s*(.+)$")
_LABEL = re.compile(r"^([^=]+)=\s*(-1|0|1|\+1)$")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


@dataclass(frozen=True, slots=True)
class Evaluation:
    name: str
    score: float | None = None
    label: str | None = None
    explanation: str | None = None
    timestamp_ns: int = 0


@dataclass(frozen=True, slots=True)
class RatingRule:
    """`name>=0.7` (met: 1, missed: -1) or `name:label=1,label=-1` (labels not listed: no rating)."""

    name: str
    op: str = ""
    threshold: float = 0.0
    labels: dict[str, int] = field(default_factory=dict)

    def rate(self, evaluation: Evaluation) -> int | None:
        if evaluation.name != self.name:
            return None
        if self.op:
            if evaluation.score is None:
                return None
            return 1 if _OPERATORS[self.op](evaluation.score, self.threshold) else -1
        return self.labels.get((evaluation.label or "").lower())

    def __str__(self) -> str:
        if self.op:
            return f"{self.name}{self.op}{self.threshold:g}"
        return f"{self.name}:" + ",".join(f"{k}={v}" for k, v in self.labels.items())


def parse_rules(raw: str | Iterable[str]) -> tuple[RatingRule, ...]:
    """Rules from `relevance>=0.7,toxicity<0.3,verdict:good=1,bad=-1` (`;` separates too); ValueError if malformed.

    A bare `label=rating` continues the label rule before it, so label lists need no other separator.
    """
    text = raw if isinstance(raw, str) else ",".join(raw)
    rules: list[RatingRule] = []
    for token in (t.strip() for t in re.split(r"[,;]", text)):
        if not token:
            continue
        threshold = _THRESHOLD.match(token)
        labels = _LABELS.match(token)
        label = _LABEL.match(token)
        if threshold:
            rules.append(RatingRule(threshold.group(1), threshold.group(2), float(threshold.group(3))))
        elif labels and _LABEL.match(labels.group(2)):
            first = _LABEL.match(labels.group(2))
            assert first is not None
            rules.append(RatingRule(labels.group(1), labels={first.group(1).strip().lower(): int(first.group(2))}))
        elif label and rules and not rules[-1].op:
            rules[-1].labels[label.group(1).strip().lower()] = int(label.group(2))
        else:
            raise ValueError(f"{token!r} is not a rule like relevance>=0.7 or verdict:good=1,bad=-1")
    return tuple(rules)


def span_evaluations(span: SpanRecord) -> tuple[Evaluation, ...]:
    """The `gen_ai.evaluation.result` events of a span (an event without a name is no evaluation)."""
    found = [evaluation for event in span.events if (evaluation := event_evaluation(event)) is not None]
    return tuple(found)


def event_evaluation(event: SpanEvent | LogEvent) -> Evaluation | None:
    """A `gen_ai.evaluation.result` event (a span event, or a log record of the Logs API) as an evaluation;
    None for any other event, or one without an evaluation name."""
    if event.name != GEN_AI_EVALUATION_RESULT_EVENT:
        return None
    get = event.attributes.get
    name = as_text(get(GEN_AI_EVALUATION_NAME)).strip()
    if not name:
        return None
    score = get(GEN_AI_EVALUATION_SCORE_VALUE)
    try:
        value = float(score) if score is not None and not isinstance(score, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is not None and not math.isfinite(value):
        value = None
    label = get(GEN_AI_EVALUATION_SCORE_LABEL)
    explanation = get(GEN_AI_EVALUATION_EXPLANATION)
    return Evaluation(
        name=name,
        score=value,
        label=as_text(label) if label is not None else None,
        explanation=as_text(explanation) if explanation is not None else None,
        timestamp_ns=event.timestamp_ns,
    )


def evaluation_metadata(evaluations: Iterable[Evaluation]) -> dict[str, str]:
    """`eval.<name>` (the score, else the label), `eval.<name>.label`, `eval.<name>.explanation`; latest wins."""
    out: dict[str, str] = {}
    for item in sorted(evaluations, key=lambda e: e.timestamp_ns):
        key = f"eval.{item.name}"
        for stale in (key, f"{key}.label", f"{key}.explanation"):
            out.pop(stale, None)
        if item.score is not None:
            out[key] = f"{item.score:g}"
            if item.label:
                out[f"{key}.label"] = item.label
        elif item.label:
            out[key] = item.label
        if item.explanation:
            out[f"{key}.explanation"] = item.explanation
    return out


def evaluation_rating(evaluations: Iterable[Evaluation], rules: tuple[RatingRule, ...]) -> int | None:
    """The rating the rules give the answer: the lowest of the latest evaluation per name (a failed check wins)."""
    latest: dict[str, Evaluation] = {}
    for item in sorted(evaluations, key=lambda e: e.timestamp_ns):
        latest[item.name] = item
    ratings = [r for item in latest.values() for rule in rules if (r := rule.rate(item)) is not None]
    return min(ratings) if ratings else None
