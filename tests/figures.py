"""Figures for docs/RELIABILITY.md: with REPLICATOR_FIGURES=PATH, tests append JSON lines there."""

from __future__ import annotations

import json
import os


def record(test: str, **values) -> None:
    path = os.environ.get("REPLICATOR_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, **values}, sort_keys=True, default=str) + "\n")
