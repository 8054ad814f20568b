"""A small HTTP-aware TCP fault proxy for tests: put it between the replicator and a real server.

    proxy = FaultProxy("127.0.0.1", moto_port, Faults(reset_before_response=0.03, http_503=0.03), seed=1).start()
    ... give the replicator proxy.url as its endpoint ...
    proxy.injected  # Counter: fault kind -> how many were played
    proxy.stop()

It reads just enough HTTP/1.1 (request heads, Content-Length, response heads) to place faults
per request, on keep-alive connections too:

- http_503 / http_500 / http_403: the request is answered by the proxy *instead of* the server (S3's
  `SlowDown` / `InternalError` / `AccessDenied` XML, then the connection closes): nothing reached the server.
- reset_request: the connection is reset when a request arrives: nothing reached the server.
- reset_before_response: the server did the request, then the connection is reset before any
  byte of its answer: the client cannot tell whether it happened (a retried put finds its own
  object).
- reset_mid_body: the answer's head and part of its body are forwarded, then a reset.
- stall: the server answered, but the proxy holds the answer back for `stall_seconds` and then
  resets the connection: a hung server or a black-holed connection, which only the client's
  read timeout ends.
- latency: up to this many seconds (uniform) before each answer's first byte.
- bandwidth: bytes per second per connection, server to client.

A reset is a real RST (SO_LINGER 0, then abort), as a broken network or a load balancer sends.
`only(method, target)` limits faults to some requests (target is the raw request target,
e.g. "/bucket/key?x-id=GetObject"). The proxy also counts requests and bytes served per target.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Callable

_ERRORS = {
    503: ("Slow Down", "SlowDown", "Please reduce your request rate."),
    500: ("Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    403: ("Forbidden", "AccessDenied", "Access Denied"),
}


@dataclass(frozen=True)
class Faults:
    reset_before_response: float = 0.0
    reset_mid_body: float = 0.0
    reset_request: float = 0.0
    http_503: float = 0.0
    http_500: float = 0.0
    http_403: float = 0.0
    stall: float = 0.0
    stall_seconds: float = 30.0
    latency: float = 0.0
    bandwidth: float | None = None
    only: Callable[[str, str], bool] | None = None

    def scaled(self, total: float) -> "Faults":
        """The same mix, scaled so that the fault probabilities add up to `total`."""
        rates = {k: getattr(self, k) for k in ("reset_before_response", "reset_mid_body", "reset_request",
                                               "http_503", "http_500")}
        s = sum(rates.values()) or 1.0
        return replace(self, **{k: v * total / s for k, v in rates.items()})


@dataclass
class _Request:
    method: str
    target: str
    length: int  # body bytes
    expect_continue: bool
    chunked: bool
    range: str | None = None
    eligible: bool = True  # faults may strike this request (Faults.only)


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, faults: Faults = Faults(), seed: int = 0):
        self.upstream = (upstream_host, upstream_port)
        self.faults = faults
        self.rng = random.Random(seed)
        self.injected: Counter = Counter()  # fault kind -> times played
        self.requests: Counter = Counter()  # (method, target) -> requests seen
        self.ranges: list[tuple[str, str | None]] = []  # (target, Range header) of every GET, in order
        self.served: Counter = Counter()  # target -> bytes of answers forwarded
        self.answers: list[tuple[str, str, int, str | None, float]] = []  # (method, target, status, ETag, time)
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultProxy":
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults

    def served_for(self, path: str) -> int:
        """Bytes of answers forwarded for one path (any query)."""
        return sum(n for target, n in list(self.served.items()) if target.split("?")[0] == path)

    def object_reads(self) -> tuple[int, int]:
        """(successful GETs of objects, distinct (object, ETag) pairs among them): the difference is
        how many times a version of an object was read again."""
        reads = [(t.split("?")[0], etag) for m, t, status, etag, _ in list(self.answers)
                 if m == "GET" and status in (200, 206) and etag and "list-type" not in t]
        return len(reads), len(set(reads))

    def peak_reads_per_second(self) -> int:
        """The most object reads answered within any one second."""
        times = sorted(at for m, t, status, etag, at in list(self.answers) if m == "GET" and etag)
        peak, j = 0, 0
        for i, at in enumerate(times):
            while times[j] < at - 1.0:
                j += 1
            peak = max(peak, i - j + 1)
        return peak

    def object_gets(self) -> Counter:
        """GET requests per object path (listings and other sub-resources left out)."""
        out: Counter = Counter()
        for (method, target), n in self.requests.items():
            path, _, query = target.partition("?")
            if method == "GET" and path.count("/") >= 2 and "list-type" not in query and "uploads" not in query:
                out[path] += n
        return out

    # -- one connection ---------------------------------------------------------------------

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            ureader, uwriter = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(cwriter)
            return
        conn = _Conn(self, creader, cwriter, ureader, uwriter)
        up = asyncio.ensure_future(conn.client_to_upstream())
        down = asyncio.ensure_future(conn.upstream_to_client())
        try:
            await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (up, down):
                t.cancel()
            for w in (cwriter, uwriter):
                if not w.transport.is_closing():
                    w.close()

    def _draw(self, req: _Request, *kinds: str) -> str | None:
        f = self.faults
        if not req.eligible:
            return None
        x = self.rng.random()
        for kind in kinds:
            p = getattr(f, kind)
            if x < p:
                return kind
            x -= p
        return None


class _Conn:
    def __init__(self, proxy: FaultProxy, creader, cwriter, ureader, uwriter):
        self.p, self.creader, self.cwriter, self.ureader, self.uwriter = proxy, creader, cwriter, ureader, uwriter
        self.pending: deque[_Request] = deque()  # requests forwarded, answer not started
        self.current: _Request | None = None  # the request whose answer is flowing
        self.opaque = False  # a body we cannot delimit (chunked): stop parsing, just forward

    async def client_to_upstream(self) -> None:
        buf = b""
        remaining = 0  # body bytes of the current request still to forward
        while True:
            data = await self.creader.read(65536)
            if not data:
                return
            if self.opaque:
                self.uwriter.write(data)
                await self.uwriter.drain()
                continue
            buf += data
            while buf:
                if remaining:
                    n = min(remaining, len(buf))
                    self.uwriter.write(buf[:n])
                    buf, remaining = buf[n:], remaining - n
                    continue
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head, buf = buf[:end + 4], buf[end + 4:]
                req = _parse_request(head)
                self.p.requests[(req.method, req.target)] += 1
                if req.method == "GET":
                    self.p.ranges.append((req.target, req.range))
                only = self.p.faults.only
                req.eligible = only is None or only(req.method, req.target)  # asked once per request
                kind = self.p._draw(req, "http_503", "http_500", "http_403", "reset_request")
                if kind == "reset_request":
                    self.p.injected[kind] += 1
                    _reset(self.cwriter)
                    return
                if kind is not None:
                    self.p.injected[kind] += 1
                    await self._answer_instead(req, buf, int(kind[-3:]))
                    return
                self.current = None
                self.pending.append(req)
                self.uwriter.write(head)
                if req.chunked:
                    self.opaque = True
                    self.uwriter.write(buf)
                    buf = b""
                    break
                remaining = req.length
            await self.uwriter.drain()

    async def _answer_instead(self, req: _Request, got: bytes, status: int) -> None:
        """Answer with an S3 error instead of the server: take the body (unless the client waits for
        100-continue), answer, close."""
        left = 0 if req.expect_continue or req.chunked else max(0, req.length - len(got))
        while left > 0:
            data = await self.creader.read(min(left, 65536))
            if not data:
                return
            left -= len(data)
        reason, code, message = _ERRORS[status]
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>FAULTPROXY</RequestId></Error>").encode()
        self.cwriter.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}"
                           f"\r\nConnection: close\r\n\r\n".encode() + body)
        await self.cwriter.drain()
        self.cwriter.close()

    async def upstream_to_client(self) -> None:
        while True:
            data = await self.ureader.read(65536)
            if not data:
                return
            if self.current is None and self.pending:
                self.current = self.pending.popleft()
                data = await self._start_answer(self.current, data)
                if data is None:
                    return
            if self.current is not None:
                self.p.served[self.current.target] += len(data)
            await self._send(data)

    async def _start_answer(self, req: _Request, data: bytes) -> bytes | None:
        """The first bytes of an answer: latency, then maybe a reset (None: the connection is gone)."""
        f = self.p.faults
        status, etag = _status_and_etag(data)
        self.p.answers.append((req.method, req.target, status, etag, time.monotonic()))
        if f.latency and req.eligible:
            await asyncio.sleep(self.p.rng.uniform(0, f.latency))
        kind = self.p._draw(req, "reset_before_response", "reset_mid_body", "stall")
        if kind == "reset_mid_body" and req.method == "HEAD":  # no body follows the head
            kind = None
        if kind == "stall":
            self.p.injected[kind] += 1
            await asyncio.sleep(f.stall_seconds)
            _reset(self.cwriter)
            return None
        if kind == "reset_before_response":
            self.p.injected[kind] += 1
            _reset(self.cwriter)
            return None
        if kind == "reset_mid_body":
            while b"\r\n\r\n" not in data:
                more = await self.ureader.read(65536)
                if not more:
                    return data
                data += more
            head_len = data.index(b"\r\n\r\n") + 4
            status = data[9:12]
            length = _content_length(data[:head_len])
            if length >= 2 and status not in (b"100", b"204", b"304"):
                cut = head_len + self.p.rng.randint(1, length - 1)
                while len(data) < cut:
                    more = await self.ureader.read(65536)
                    if not more:
                        break
                    data += more
                self.p.injected[kind] += 1
                self.p.served[req.target] += min(cut, len(data))
                await self._send(data[:cut])
                _reset(self.cwriter)
                return None
        return data

    async def _send(self, data: bytes) -> None:
        rate = self.p.faults.bandwidth
        if not rate:
            self.cwriter.write(data)
            await self.cwriter.drain()
            return
        step = max(1024, int(rate / 20))
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            self.cwriter.write(piece)
            await self.cwriter.drain()
            await asyncio.sleep(len(piece) / rate)


def _parse_request(head: bytes) -> _Request:
    lines = head.decode("latin-1").split("\r\n")
    method, target = (lines[0].split(" ") + ["", ""])[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return _Request(method, target, int(headers.get("content-length", "0") or 0),
                    headers.get("expect", "").lower() == "100-continue",
                    "chunked" in headers.get("transfer-encoding", "").lower(), headers.get("range"))


def _status_and_etag(data: bytes) -> tuple[int, str | None]:
    """Status and ETag from the head at the start of an answer (when the first read holds them)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    try:
        status = int(head[0].split(" ")[1])
    except (IndexError, ValueError):
        status = 0
    etag = next((line.split(":", 1)[1].strip().strip('"') for line in head[1:]
                 if line.lower().startswith("etag:")), None)
    return status, etag


def _content_length(head: bytes) -> int:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            return int(v.strip() or 0)
    return 0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Send an RST, not a FIN: SO_LINGER with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
