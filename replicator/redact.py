"""Secrets never reach output: every resolved secret is registered here and masked in messages."""

from __future__ import annotations

import threading

_lock = threading.Lock()
_secrets: set[str] = set()


def register(value: str) -> None:
    """Remember a secret value (and its obvious parts) so that `redact` masks it."""
    if isinstance(value, str) and len(value) >= 4:
        with _lock:
            _secrets.add(value)
            for part in value.replace(";", " ").split():  # connection strings: mask each field
                if "=" in part and len(part.split("=", 1)[1]) >= 8:
                    _secrets.add(part.split("=", 1)[1])


def redact(text: str) -> str:
    with _lock:
        for s in sorted(_secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, "***")
    return text
