"""The sidecar: OTLP/HTTP and OTLP/gRPC receivers feeding the same pipeline as the in-process exporter."""
