"""collector-config/ checked by a real Collector: otelcol-context, built from collector-config/builder-config.yaml.

Every shipped Collector config goes through `otelcol-context validate` (tests/support/otelcol.py):
component types, settings, OTTL conditions and pipeline wiring are the binary's to judge. Its
structure, what the binary cannot judge, is checked in tests/unit/test_collector_config.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from ..support.collector_config import (
    GATEWAY,
    KINDS,
    OTELCOL,
    component_type,
    gateway_configs,
    load,
    shipped_configs,
)
from ..support.otelcol import BUILD_TIMEOUT_S, CONFIG_DIR, otelcol_binary, validate

MANIFEST = CONFIG_DIR / "builder-config.yaml"


needs_binary = pytest.mark.timeout(BUILD_TIMEOUT_S)  # the first use may build the Collector


def manifest_components() -> dict[str, set[str]]:
    """The Go modules builder-config.yaml puts in the binary, by kind (path without the version)."""
    manifest = load(MANIFEST)
    return {
        kind: {entry["gomod"].split()[0] for entry in manifest.get(kind, [])}
        for kind in ("receivers", "processors", "exporters", "extensions", "connectors")
    }


@pytest.fixture(scope="module")
def binary() -> Path:
    return otelcol_binary()


@pytest.fixture(scope="module")
def components(binary) -> dict[str, dict[str, str]]:
    """`otelcol-context components`: {kind: {type name: module}}."""
    listed = yaml.safe_load(
        subprocess.run([str(binary), "components"], capture_output=True, text=True, check=True).stdout
    )
    return {kind: {c["name"]: c["module"].split()[0] for c in listed.get(kind) or []} for kind in manifest_components()}


def collector_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return env | extra


@needs_binary
@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.name)
@pytest.mark.parametrize("token", ["shared-secret", None], ids=["token", "no-token"])
def test_the_collector_validates_every_shipped_config(binary, path, token):
    env = collector_env(**({"OTEL_CONTEXT_SERVE_TOKEN": token} if token else {}))
    result = validate(binary, path, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "deprecated" not in output.lower(), f"{path.name} uses a deprecated name or setting:\n{output}"


@needs_binary
@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (('"traceloop.span.kind"] == nil and', '"traceloop.span.kind"] === nil and'), "invalid syntax"),
        (("otlp_http/otel_context", "otlp_htpp/otel_context"), "otlp_htpp"),
        (("limit_mib: 400", "limit_mib: 50"), "spike"),
        (
            ("processors: [memory_limiter, filter/genai, batch]", "processors: [memory_limiter, filter/nope, batch]"),
            "filter/nope",
        ),
    ],
    ids=["ottl-syntax", "unknown-exporter-type", "memory-limits", "undefined-processor"],
)
def test_the_collector_rejects_a_broken_config(binary, tmp_path, change, complaint):
    """The validation above means something: the binary finds the mistakes it is relied on for."""
    text = OTELCOL.read_text(encoding="utf-8")
    assert change[0] in text
    broken = tmp_path / "otelcol.yaml"
    broken.write_text(text.replace(change[0], change[1]), encoding="utf-8")
    result = validate(binary, broken, env=collector_env(OTEL_CONTEXT_SERVE_TOKEN="x"))
    assert result.returncode != 0
    assert complaint in result.stdout + result.stderr


@needs_binary
def test_the_binary_has_every_component_of_the_manifest_and_no_other(components):
    built = {kind: set(by_name.values()) for kind, by_name in components.items()}
    assert built == manifest_components()


@needs_binary
def test_every_component_type_in_the_configs_is_one_the_binary_lists(components):
    for path in shipped_configs():
        config = load(path)
        for kind in (*KINDS, "extensions"):
            for component_id in config.get(kind) or {}:
                assert component_type(component_id) in components[kind], (
                    f"{path.name}: {kind[:-1]} {component_id!r} is not in otelcol-context ({sorted(components[kind])})"
                )


@needs_binary
def test_the_collector_validates_both_gateway_configs(binary, tmp_path):
    assert GATEWAY in shipped_configs()
    for path in gateway_configs(tmp_path).values():
        result = validate(binary, path, env=collector_env(OTEL_CONTEXT_SERVE_TOKEN="x"))
        assert result.returncode == 0, result.stdout + result.stderr
