"""Readers that turn spans from each source into `SpanRecord`s: SDK spans, OTLP, JSON dumps."""
