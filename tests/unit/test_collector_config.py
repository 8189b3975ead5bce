"""collector-config/: the sidecar's Collector configuration and its manifests, read as YAML.

What a real Collector cannot judge (tests/e2e/test_collector_config.py runs `otelcol-context validate`)
stays structural: that the pipeline order and the delivery settings are the ones the README promises,
that the route leads to `otel-context serve`, what the GenAI filter keeps across conventions (a small
evaluator runs its conditions against hand-made spans and real LangChain spans), and the Kubernetes
and compose manifests that run it.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ..support.collector_config import (
    GATEWAY_K8S,
    KINDS,
    OTELCOL,
    component_type,
    gateway_configs,
    load,
    load_all,
    shipped_configs,
)
from ..support.otelcol import CONFIG_DIR

K8S = CONFIG_DIR / "kubernetes-sidecar.yaml"
KUSTOMIZATION = CONFIG_DIR / "kustomization.yaml"
COMPOSE = CONFIG_DIR / "docker-compose.yaml"

TARGET_RELEASE = "0.161.0"
BRIDGE_PORT = 4319  # `otel-context serve --port 4319`; 4318 belongs to the Collector's OTLP/HTTP receiver
TOKEN_HEADER = "Bearer ${env:OTEL_CONTEXT_SERVE_TOKEN}"


@pytest.fixture(scope="module")
def config() -> dict:
    return load(OTELCOL)


def traces_pipelines(config: dict) -> dict[str, dict]:
    pipelines = config["service"]["pipelines"]
    found = {name: p for name, p in pipelines.items() if name == "traces" or name.startswith("traces/")}
    assert found, "no traces pipeline in service.pipelines"
    return found


def the_exporter(config: dict) -> tuple[str, dict]:
    (pipeline,) = traces_pipelines(config).values()
    sidecar = [e for e in pipeline["exporters"] if component_type(e) == "otlp_http"]
    assert len(sidecar) == 1, f"expected one otlp_http exporter to the sidecar, got {pipeline['exporters']}"
    return sidecar[0], config["exporters"][sidecar[0]] or {}


def filter_processors(config: dict) -> dict[str, dict]:
    found = {pid: cfg or {} for pid, cfg in config.get("processors", {}).items() if component_type(pid) == "filter"}
    assert found, "no filter processor defined"
    return found


# --- the shipped configs -----------------------------------------------------------------


def configs_the_manifests_run() -> set[Path]:
    """The kustomize ConfigMap's files and the compose file's mounted configs."""
    found = set()
    for generator in load(KUSTOMIZATION).get("configMapGenerator", []):
        found |= {CONFIG_DIR / item.split("=", 1)[-1] for item in generator.get("files", [])}
    for service in load(COMPOSE)["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.endswith((".yaml", ".yml")):
                found.add((CONFIG_DIR / source).resolve())
    return found


def test_every_config_the_manifests_run_is_a_shipped_config():
    assert OTELCOL in shipped_configs()
    assert configs_the_manifests_run() <= set(shipped_configs())


def test_every_defined_component_is_used(config):
    used = {kind: set() for kind in (*KINDS, "extensions")}
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            used[kind].update(pipeline.get(kind, []))
    used["extensions"].update(config["service"].get("extensions", []))
    for kind in (*KINDS, "extensions"):
        unused = set(config.get(kind) or {}) - used[kind]
        assert not unused, f"{kind} defined but never used (the Collector ignores them): {sorted(unused)}"


def test_header_names_the_target_release():
    header = "".join(
        line for line in OTELCOL.read_text(encoding="utf-8").splitlines(keepends=True) if line.startswith("#")
    )
    assert f"v{TARGET_RELEASE}" in header
    assert "otlphttp" in header and "trace_conditions" in header, (
        "the header should say what changes for older releases"
    )


# --- the pipeline -----------------------------------------------------------------------


def test_pipeline_order_memory_limiter_first_filter_before_batch_batch_last(config):
    for name, pipeline in traces_pipelines(config).items():
        types = [component_type(p) for p in pipeline.get("processors", [])]
        assert types and types[0] == "memory_limiter", f"{name}: memory_limiter must come first, got {types}"
        assert "filter" in types, f"{name}: no filter processor, so HTTP and database spans would leave the Pod"
        assert "batch" in types and types[-1] == "batch", f"{name}: batch must come last, got {types}"
        assert types.index("filter") < types.index("batch"), (
            f"{name}: filter before batch, so dropped spans are never batched"
        )


def test_memory_limiter_settings_are_valid(config):
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"] not in (None, "0s", 0)
    assert limiter["limit_mib"] > limiter["spike_limit_mib"] > 0


def test_receivers_use_the_standard_ports_and_the_bridge_port_is_free(config):
    protocols = config["receivers"]["otlp"]["protocols"]
    ports = {name: int(p["endpoint"].rsplit(":", 1)[1]) for name, p in protocols.items()}
    assert ports == {"grpc": 4317, "http": 4318}
    assert BRIDGE_PORT not in ports.values()
    for name, p in protocols.items():
        assert p["endpoint"].rsplit(":", 1)[0] in ("127.0.0.1", "localhost"), f"{name} receiver should stay on loopback"


def test_exporter_sends_to_the_bridge(config):
    _, exporter = the_exporter(config)
    url = urlsplit(exporter["traces_endpoint"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("http", "127.0.0.1", BRIDGE_PORT, "/v1/traces")
    assert "endpoint" not in exporter, "with traces_endpoint set, a second base endpoint only confuses"


def test_exporter_sends_the_bearer_token(config):
    _, exporter = the_exporter(config)
    header = (exporter.get("headers") or {}).get("Authorization")
    authenticator = (exporter.get("auth") or {}).get("authenticator")
    if authenticator is not None:
        assert component_type(authenticator) == "bearertokenauth"
        assert "OTEL_CONTEXT_SERVE_TOKEN" in str(config["extensions"][authenticator])
    else:
        assert header == TOKEN_HEADER


def test_retry_on_failure_and_sending_queue_are_enabled(config):
    _, exporter = the_exporter(config)
    retry = exporter["retry_on_failure"]
    assert retry["enabled"] is True
    assert retry.get("max_elapsed_time") not in (None, "0s", 0), "0 means retry forever with an unbounded backlog"
    queue = exporter["sending_queue"]
    assert queue["enabled"] is True
    assert queue["queue_size"] > 0 and queue.get("num_consumers", 10) > 0


# --- the GenAI filter ------------------------------------------------------------------------

_CLAUSE = re.compile(r'^span\.attributes\["([^"]+)"\]\s*(==|!=)\s*nil$')


def _drops(condition: str, attributes: dict) -> bool:
    """Evaluate one filter condition: `or` of `and` of `span.attributes["k"] ==/!= nil` clauses.

    That is all the GenAI filter needs. A condition outside this grammar fails the test: extend
    this evaluator rather than leave a condition unchecked.
    """
    text = " ".join(condition.split())
    result = False
    for alternative in re.split(r"\s+or\s+", text):
        value = True
        for clause in re.split(r"\s+and\s+", alternative):
            match = _CLAUSE.match(clause.strip())
            if match is None:
                pytest.fail(f"filter clause outside the test's OTTL subset: {clause!r}")
            present = attributes.get(match.group(1)) is not None
            value = value and (not present if match.group(2) == "==" else present)
        result = result or value
    return result


def genai_conditions(config: dict) -> list[str]:
    conditions: list[str] = []
    for pid, cfg in filter_processors(config).items():
        assert "traces" not in cfg, (
            f"{pid}: `traces:` is the legacy form (deprecated since v0.156.0); use trace_conditions"
        )
        assert "error_mode" in cfg, f"{pid}: set error_mode; its default changed in v0.153.0"
        for item in cfg.get("trace_conditions", []):
            if isinstance(item, str):
                conditions.append(item)
            else:  # advanced form: {context?, error_mode?, conditions: [...]}
                conditions.extend(item["conditions"])
    assert conditions
    return conditions


def kept(config: dict, attributes: dict) -> bool:
    return not any(_drops(c, attributes) for c in genai_conditions(config))


def test_filter_conditions_name_the_genai_markers(config):
    text = " ".join(genai_conditions(config))
    for marker in ("gen_ai.", "traceloop.", "llm.", "openinference."):
        assert marker in text
    # Roots: LangChain root spans carry traceloop.span.kind, and OpenInference spans carry openinference.span.kind.
    assert '"traceloop.span.kind"' in text and '"openinference.span.kind"' in text


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"traceloop.span.kind": "workflow", "traceloop.entity.name": "RunnableSequence"}, True),
        ({"traceloop.span.kind": "task"}, True),
        ({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}, True),
        ({"gen_ai.system": "openai", "llm.request.type": "chat"}, True),
        ({"llm.request.type": "completion"}, True),
        ({"openinference.span.kind": "LLM"}, True),
        ({"openinference.span.kind": "CHAIN", "input.value": "hi"}, True),
        ({"http.request.method": "GET", "url.path": "/chat", "http.response.status_code": 200}, False),
        ({"db.system.name": "postgresql", "db.query.text": "SELECT * FROM users"}, False),
        ({"rpc.system": "grpc"}, False),
        ({}, False),
    ],
)
def test_filter_keeps_genai_spans_and_drops_the_rest(config, attributes, expected):
    assert kept(config, attributes) is expected


def test_filter_keeps_every_span_of_a_real_langchain_run_and_drops_a_plain_span(config, capture):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from opentelemetry.sdk.trace import TracerProvider

    chain = (
        ChatPromptTemplate.from_template("Name a company that makes {product}.")
        | FakeListChatModel(responses=["Rainbow Threads"])
        | StrOutputParser()
    )
    spans = capture(lambda: chain.invoke({"product": "colorful socks"}))
    assert len(spans) >= 3, [s.name for s in spans]
    dropped = [s.name for s in spans if not kept(config, dict(s.attributes or {}))]
    assert not dropped, f"the filter would drop LangChain spans: {dropped}"

    tracer = TracerProvider().get_tracer("plain-app")
    with tracer.start_as_current_span("GET /chat", attributes={"http.request.method": "GET"}) as plain:
        pass
    assert not kept(config, dict(plain.attributes))


# --- the logs pipeline: GenAI evaluation results only ----------------------------------------------

_LOG_CLAUSE = re.compile(r'^log\.(event_name|attributes\["([^"]+)"\])\s*(==|!=)\s*"([^"]*)"$')


def log_kept(config: dict, record: dict) -> bool:
    """Evaluate the logs filters' conditions (`and` of `log.event_name` / `log.attributes["k"]` compared with a
    string) against a log record given as {"event_name": ..., "attributes": {...}}."""
    for pid, cfg in filter_processors(config).items():
        for condition in cfg.get("log_conditions", []):
            drops = True
            for clause in re.split(r"\s+and\s+", " ".join(condition.split())):
                match = _LOG_CLAUSE.match(clause.strip())
                if match is None:
                    pytest.fail(f"{pid}: log clause outside the test's OTTL subset: {clause!r}")
                value = record.get("event_name") if match.group(2) is None else record["attributes"].get(match.group(2))
                equal = value == match.group(4)
                drops = drops and (equal if match.group(3) == "==" else not equal)
            if drops:
                return False
    return True


def test_the_logs_pipeline_sends_only_evaluation_results_to_the_bridge(config):
    logs = config["service"]["pipelines"]["logs"]
    types = [component_type(p) for p in logs["processors"]]
    assert types == ["memory_limiter", "filter", "batch"]
    (exporter,) = logs["exporters"]
    assert exporter == the_exporter(config)[0]  # the same exporter, token and retries as traces
    url = urlsplit(config["exporters"][exporter]["logs_endpoint"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("http", "127.0.0.1", BRIDGE_PORT, "/v1/logs")
    result = "gen_ai.evaluation.result"
    assert log_kept(config, {"event_name": result, "attributes": {"gen_ai.evaluation.name": "relevance"}})
    assert log_kept(config, {"event_name": "", "attributes": {"event.name": result}})  # before `event_name`
    assert not log_kept(config, {"event_name": "", "attributes": {"http.route": "/chat"}})  # a log line
    assert not log_kept(config, {"event_name": "gen_ai.client.inference.operation.details", "attributes": {}})


# --- the manifests that run it ------------------------------------------------------------


def _containers(pod_spec: dict) -> dict[str, dict]:
    return {c["name"]: c for c in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]}


def _secret_env(container: dict) -> dict[str, tuple[str, str]]:
    out = {}
    for item in container.get("env", []):
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            out[item["name"]] = (ref["name"], ref["key"])
    return out


def test_kubernetes_sidecar_runs_the_bridge_on_the_exporters_port(config):
    (deployment,) = [d for d in load_all(K8S) if d["kind"] == "Deployment"]
    containers = _containers(deployment["spec"]["template"]["spec"])
    sidecar, collector = containers["otel-context"], containers["otelcol"]

    command = [*sidecar.get("command", []), *sidecar.get("args", [])]
    assert command[:2] == ["otel-context", "serve"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert int(command[command.index("--port") + 1]) == urlsplit(the_exporter(config)[1]["traces_endpoint"]).port

    assert "CONTEXT_API_TOKEN" in _secret_env(sidecar)
    assert _secret_env(sidecar)["OTEL_CONTEXT_SERVE_TOKEN"] == _secret_env(collector)["OTEL_CONTEXT_SERVE_TOKEN"]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib:") and collector["image"].endswith(
        TARGET_RELEASE
    )

    config_arg = next(a for a in collector["args"] if a.startswith("--config="))
    mount = next(m for m in collector["volumeMounts"] if config_arg.split("=", 1)[1].startswith(m["mountPath"]))
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    generated = load(KUSTOMIZATION)["configMapGenerator"]
    assert {"name": volume["configMap"]["name"], "files": ["config.yaml=otelcol.yaml"]} in generated

    app_env = {e["name"]: e.get("value") for e in containers["app"]["env"]}
    assert app_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"


def test_compose_mirrors_the_pod(config):
    services = load(COMPOSE)["services"]
    assert services["otelcol"]["image"].endswith(TARGET_RELEASE)
    assert "./otelcol.yaml:/etc/otelcol-contrib/config.yaml:ro" in services["otelcol"]["volumes"]
    for name in ("otel-context", "app"):
        assert services[name]["network_mode"] == "service:otelcol", f"{name} must share the collector's loopback"
    command = services["otel-context"]["command"]
    assert int(command[command.index("--port") + 1]) == BRIDGE_PORT
    assert {"CONTEXT_API_TOKEN", "OTEL_CONTEXT_SERVE_TOKEN"} <= set(services["otel-context"]["environment"])
    assert "OTEL_CONTEXT_SERVE_TOKEN" in services["otelcol"]["environment"]
    # the image nothing else publishes is built from this repository
    build = services["otel-context"]["build"]
    dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile.is_file()
    text = dockerfile.read_text()
    assert 'CMD ["otel-context", "serve"' in text
    assert "pip install --no-cache-dir '.[sidecar]'" in text, "serve needs the sidecar extra (aiohttp, grpcio)"


# --- the gateway: load_balancing in front of replicas sharing Redis ---------------------------------

GATEWAY_COMPOSE = CONFIG_DIR / "docker-compose-gateway.yaml"
BALANCER = "load_balancing/otel_context"


def test_the_gateway_routes_by_trace_id_to_replicas_that_share_redis(tmp_path):
    configs = {name: load(path) for name, path in gateway_configs(tmp_path).items()}
    sidecar = load(OTELCOL)
    for config in configs.values():
        balancer = config["exporters"][BALANCER]
        assert balancer["routing_key"] == "traceID"  # a trace is never split; sessions meet in Redis
        assert balancer["protocol"]["otlp"]["retry_on_failure"]["enabled"]  # a restarting replica is waited for
        assert config["processors"]["filter/genai"] == sidecar["processors"]["filter/genai"]
        assert config["service"]["pipelines"]["traces"]["exporters"] == [BALANCER]
        # evaluation results go by the same trace id, to the replica that holds their run
        assert config["processors"]["filter/evaluations"] == sidecar["processors"]["filter/evaluations"]
        assert config["service"]["pipelines"]["logs"]["exporters"] == [BALANCER]

    # compose: the static resolver names the replica services, on their gRPC port
    compose = load(GATEWAY_COMPOSE)["services"]
    hostnames = configs["static"]["exporters"][BALANCER]["resolver"]["static"]["hostnames"]
    assert {h.split(":")[0] for h in hostnames} == {name for name in compose if name.startswith("otel-context-")}
    assert {h.split(":")[1] for h in hostnames} == {"4320"}
    for name in (h.split(":")[0] for h in hostnames):
        assert compose[name]["environment"]["OTEL_EXPORTER_CONTEXT_SESSION_DB"].startswith("redis://redis:")
    assert "./gateway.yaml:/etc/otelcol-contrib/config.yaml:ro" in compose["gateway"]["volumes"]

    # Kubernetes: the DNS resolver resolves a headless Service selecting the replicas
    docs = load_all(GATEWAY_K8S)
    dns = configs["dns"]["exporters"][BALANCER]["resolver"]["dns"]
    service_name = dns["hostname"].split(".")[0]
    (headless,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == service_name]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["ports"][0]["port"] == int(dns["port"])
    (replicas,) = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["spec"]["template"]["metadata"]["labels"] == headless["spec"]["selector"]
    ]
    (container,) = replicas["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OTEL_EXPORTER_CONTEXT_SESSION_DB"].startswith("redis://redis.")
    assert "--spool-dir" in container["args"]  # threads built and not yet delivered survive a restart
