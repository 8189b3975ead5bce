"""The sidecar: OTLP/HTTP and OTLP/gRPC receivers feeding the same bridge as the in-process exporter."""
