"""Secrets never reach output: every resolved secret is registered here and masked in messages."""

from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
# Signed AWS requests carry credentials nobody registered: a session token, the access key id, a
# signature valid for up to an hour. At debug level urllib3 logs presigned URLs (s3_direct.py) and
# botocore its requests' headers (`'X-Amz-Security-Token': b'...'`, `Authorization: ... Credential=`).
_SIGNED = re.compile(r"((?:X-Amz-)?(?:Signature|Security-Token|Credential)=)[^&\s\"'<>,]+"
                     r"|('X-Amz-Security-Token': b?')[^']+", re.IGNORECASE)


def register(value: str) -> None:
    """Remember a secret value (and its obvious parts) so that `redact` masks it."""
    if isinstance(value, str) and len(value) >= 4:
        with _lock:
            _secrets.add(value)
            for part in value.replace(";", " ").split():  # connection strings: mask each field
                if "=" in part and len(part.split("=", 1)[1]) >= 8:
                    _secrets.add(part.split("=", 1)[1])


# A URL may carry its credentials itself: https://user:token@host/..., ssh://user@host/...
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/\s]+@", re.IGNORECASE)  # up to the last @: `p@ss` too


def first_line(e: BaseException) -> str:
    """What a one-line error shows of an exception: its first line (or its type), secrets masked."""
    text = str(e).strip()
    return redact(text.splitlines()[0] if text else type(e).__name__)


def redact(text: str) -> str:
    with _lock:
        for s in sorted(_secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, "***")
    if "=" in text or "Token" in text:
        text = _SIGNED.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)
    if "@" in text and "://" in text:
        text = _USERINFO.sub(r"\1***@", text)
    return text
