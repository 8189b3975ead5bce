"""Where the tests find the repository and the captured spans they replay."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
REFERENCE_SPANS = FIXTURES / "reference"  # OpenLLMetry 0.62.4, captured
