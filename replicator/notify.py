"""The optional webhook: a JSON event POSTed on breaker trips, failed runs and failed verifies.

Best effort: a receiver that is down is logged, never fatal, and never delays a run by
more than the timeout. Events carry job names and reasons, never config or secrets.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request

from replicator import __version__
from replicator.redact import redact

log = logging.getLogger("replicator.notify")
TIMEOUT = 10.0


def send(webhook: str | None, event: str, **fields) -> bool:
    if not webhook:
        return False
    body = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": socket.gethostname(), "replicator": __version__,
            **{k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}}
    req = urllib.request.Request(webhook, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": f"replicator/{__version__}"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            resp.read()
        return True
    except (urllib.error.URLError, OSError, ValueError) as e:
        log.warning("webhook %s event not delivered: %s", event, redact(str(e)))
        return False
