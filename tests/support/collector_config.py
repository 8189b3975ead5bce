"""The Collector configurations shipped in collector-config/, read as YAML: the structural checks read them
and the real Collector (tests/support/otelcol.py) validates them."""

from __future__ import annotations

from pathlib import Path

import yaml

from .otelcol import CONFIG_DIR

OTELCOL = CONFIG_DIR / "otelcol.yaml"
GATEWAY = CONFIG_DIR / "gateway.yaml"
GATEWAY_K8S = CONFIG_DIR / "kubernetes-gateway.yaml"
KINDS = ("receivers", "processors", "exporters", "connectors")


def load(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_all(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def shipped_configs() -> list[Path]:
    """Every Collector config in collector-config/: each YAML file shaped like one (a `service` and pipelines)."""
    found = []
    for path in sorted(CONFIG_DIR.glob("*.y*ml")):
        documents = load_all(path)
        if (
            len(documents) == 1
            and isinstance(documents[0], dict)
            and "pipelines" in (documents[0].get("service") or {})
        ):
            found.append(path)
    return found


def gateway_configs(tmp_path: Path) -> dict[str, Path]:
    """gateway.yaml (static resolver) and the Kubernetes ConfigMap's variant (DNS resolver), as files."""
    (config_map,) = [d for d in load_all(GATEWAY_K8S) if d["kind"] == "ConfigMap"]
    dns = tmp_path / "gateway-dns.yaml"
    dns.write_text(config_map["data"]["config.yaml"], encoding="utf-8")
    return {"static": GATEWAY, "dns": dns}
