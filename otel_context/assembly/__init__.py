"""Stage 2, assemble: hold a trace's spans until its root arrives, then hand the root and what its
descendants reported to conversion."""
