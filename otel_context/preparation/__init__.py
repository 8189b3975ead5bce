"""Stage 4, prepare: which threads are sent (selection), what they may say (redaction), how turns join sessions."""
