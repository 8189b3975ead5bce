"""Span attribute keys, event names and resource keys the readers (and conversion) look for, defined once.

Keys come from `opentelemetry-semantic-conventions` when the oldest release our dependencies allow has
them (`opentelemetry-sdk>=1.30` pins 0.51b0); keys added to it later, or never, are spelled here under
the names it gives them (or Traceloop's package does), so a later switch to the package is an import.
0.66b2 marks its `gen_ai.*` keys deprecated, as moved to the GenAI conventions' own repository: should
a release drop them, spell them here like the others. Keys only one reader reads (OpenInference's
`llm.*` and `input.value`, the GenAI message events and their bodies) are defined in that reader.
"""

from __future__ import annotations

from opentelemetry.semconv._incubating.attributes.enduser_attributes import ENDUSER_ID
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_COMPLETION,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROMPT,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_SYSTEM,
    GEN_AI_USAGE_COMPLETION_TOKENS,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_PROMPT_TOKENS,
)
from opentelemetry.semconv._incubating.attributes.session_attributes import SESSION_ID
from opentelemetry.semconv._incubating.attributes.user_attributes import USER_ID
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.exception_attributes import EXCEPTION_MESSAGE, EXCEPTION_TYPE
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

# GenAI keys the package gained after 0.51b0.
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"  # 1.38, until renamed
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS = "gen_ai.usage.cache_write.input_tokens"  # semantic-conventions-genai
# Per-modality counts (semantic-conventions-genai, unreleased): parts of `input_tokens` / `output_tokens`.
GEN_AI_USAGE_MODALITY_INPUT_TOKENS = tuple(
    f"gen_ai.usage.{m}.input_tokens" for m in ("text", "image", "audio", "video")
)
GEN_AI_USAGE_MODALITY_OUTPUT_TOKENS = tuple(f"gen_ai.usage.{m}.output_tokens" for m in ("text", "audio"))
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_EVALUATION_NAME = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL = "gen_ai.evaluation.score.label"
GEN_AI_EVALUATION_EXPLANATION = "gen_ai.evaluation.explanation"
# Event names (the package has no constants for events).
GEN_AI_EVALUATION_RESULT_EVENT = "gen_ai.evaluation.result"
GEN_AI_CLIENT_OPERATION_EXCEPTION_EVENT = "gen_ai.client.operation.exception"  # 1.38+: the operation failed
EXCEPTION_EVENT = "exception"  # what `Span.record_exception` adds
# A resource key: stable in the package after 0.51b0, which has only the incubating one (deprecated now).
SERVICE_INSTANCE_ID = "service.instance.id"

# OpenLLMetry (Traceloop) keys, some written before the GenAI conventions had their own; named as
# Traceloop's `opentelemetry-semantic-conventions-ai` names them (not imported: it changes with each release).
TRACELOOP_SPAN_KIND = "traceloop.span.kind"
TRACELOOP_WORKFLOW_NAME = "traceloop.workflow.name"
TRACELOOP_ENTITY_NAME = "traceloop.entity.name"
TRACELOOP_ENTITY_INPUT = "traceloop.entity.input"
TRACELOOP_ENTITY_OUTPUT = "traceloop.entity.output"
ASSOCIATION_PREFIX = "traceloop.association.properties."  # the default; OTEL_EXPORTER_CONTEXT_ASSOCIATION_PREFIX
LLM_REQUEST_TYPE = "llm.request.type"
LLM_USAGE_TOTAL_TOKENS = "llm.usage.total_tokens"
GEN_AI_USAGE_TOTAL_TOKENS = "gen_ai.usage.total_tokens"
LLM_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read_input_tokens"  # before semconv 1.38
LLM_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation_input_tokens"  # before semconv 1.38
GEN_AI_USAGE_REASONING_TOKENS = "gen_ai.usage.reasoning_tokens"  # before semconv 1.38

# LangChain's own run metadata, which OpenLLMetry copies into association properties and OpenInference
# into `metadata`: the model name, when the provider call does not say it.
LS_MODEL_NAME = "ls_model_name"

# OpenInference marks every span with its kind (its other keys are read only in `openinference.py`).
OPENINFERENCE_SPAN_KIND = "openinference.span.kind"

__all__ = [  # the package's keys re-exported, and ours
    "ASSOCIATION_PREFIX",
    "ENDUSER_ID",
    "ERROR_TYPE",
    "EXCEPTION_EVENT",
    "EXCEPTION_MESSAGE",
    "EXCEPTION_TYPE",
    "GEN_AI_CLIENT_OPERATION_EXCEPTION_EVENT",
    "GEN_AI_COMPLETION",
    "GEN_AI_CONVERSATION_ID",
    "GEN_AI_EVALUATION_EXPLANATION",
    "GEN_AI_EVALUATION_NAME",
    "GEN_AI_EVALUATION_RESULT_EVENT",
    "GEN_AI_EVALUATION_SCORE_LABEL",
    "GEN_AI_EVALUATION_SCORE_VALUE",
    "GEN_AI_INPUT_MESSAGES",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_OUTPUT_MESSAGES",
    "GEN_AI_PROMPT",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_SYSTEM",
    "GEN_AI_SYSTEM_INSTRUCTIONS",
    "GEN_AI_TOOL_CALL_ARGUMENTS",
    "GEN_AI_TOOL_CALL_RESULT",
    "GEN_AI_TOOL_NAME",
    "GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS",
    "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS",
    "GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS",
    "GEN_AI_USAGE_COMPLETION_TOKENS",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_MODALITY_INPUT_TOKENS",
    "GEN_AI_USAGE_MODALITY_OUTPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "GEN_AI_USAGE_PROMPT_TOKENS",
    "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS",
    "GEN_AI_USAGE_REASONING_TOKENS",
    "GEN_AI_USAGE_TOTAL_TOKENS",
    "GEN_AI_WORKFLOW_NAME",
    "LLM_REQUEST_TYPE",
    "LLM_USAGE_CACHE_CREATION_INPUT_TOKENS",
    "LLM_USAGE_CACHE_READ_INPUT_TOKENS",
    "LLM_USAGE_TOTAL_TOKENS",
    "LS_MODEL_NAME",
    "OPENINFERENCE_SPAN_KIND",
    "SERVICE_INSTANCE_ID",
    "SERVICE_NAME",
    "SESSION_ID",
    "TRACELOOP_ENTITY_INPUT",
    "TRACELOOP_ENTITY_NAME",
    "TRACELOOP_ENTITY_OUTPUT",
    "TRACELOOP_SPAN_KIND",
    "TRACELOOP_WORKFLOW_NAME",
    "USER_ID",
]
