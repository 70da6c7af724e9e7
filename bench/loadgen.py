"""Small load generators: keep-alive HTTP/1.1 over raw sockets, and NATS request-reply.

Both run in a child process of their own, so the client never shares an event loop with
what it measures; the same generator drives every target, so figures compare fairly.
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoadResult:
    """Latency percentiles (ms) and throughput of one run."""

    name: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def row(self) -> str:
        return (
            f"{self.name:<44} c={self.concurrency:<3} p50 {self.p50_ms:7.3f} ms  "
            f"p99 {self.p99_ms:7.3f} ms  {self.rps:9.0f} req/s  ({self.requests} req, "
            f"{self.errors} errors)"
        )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _http_worker(
    host: str, port: int, request: bytes, deadline: float, lat: list[float], errs: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            lat.append((time.perf_counter() - t0) * 1000)
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 202")):
                errs.append(1)
    finally:
        writer.close()


async def _http_run(
    host: str,
    port: int,
    path: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    warmup: float,
    auth: str = "",
    content_type: str = "application/json",
) -> tuple[list[float], int, float]:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        + (f"Authorization: {auth}\r\n" if auth else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    if warmup:
        await asyncio.gather(
            *(
                _http_worker(host, port, request, time.perf_counter() + warmup, [], [])
                for _ in range(concurrency)
            )
        )
    lat: list[float] = []
    errs: list[int] = []
    t0 = time.perf_counter()
    await asyncio.gather(
        *(_http_worker(host, port, request, t0 + seconds, lat, errs) for _ in range(concurrency))
    )
    return lat, len(errs), time.perf_counter() - t0


async def _nats_run(
    url: str,
    subject: str,
    headers: dict[str, str] | None,
    body: bytes,
    concurrency: int,
    seconds: float,
    warmup: float,
) -> tuple[list[float], int, float]:
    import nats

    nc = await nats.connect(url)

    counter = [0]

    async def worker(deadline: float, lat: list[float], errs: list[int]) -> None:
        while time.perf_counter() < deadline:
            hdrs = headers
            if headers is not None and "ce-id" in headers:
                counter[0] += 1  # every CloudEvent needs its own id (it is the activation id)
                hdrs = {**headers, "ce-id": f"{headers['ce-id']}{counter[0]:012d}"}
            t0 = time.perf_counter()
            try:
                await nc.request(subject, body, timeout=10, headers=hdrs)
            except Exception:
                errs.append(1)
                continue
            lat.append((time.perf_counter() - t0) * 1000)

    if warmup:
        end = time.perf_counter() + warmup
        await asyncio.gather(*(worker(end, [], []) for _ in range(concurrency)))
    lat: list[float] = []
    errs: list[int] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(t0 + seconds, lat, errs) for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    await nc.close()
    return lat, len(errs), elapsed


def _child(kind: str, args: tuple[Any, ...], queue: Any) -> None:
    import uvloop

    runner = _http_run if kind == "http" else _nats_run
    queue.put(uvloop.run(runner(*args)))


def _in_child(kind: str, args: tuple[Any, ...]) -> tuple[list[float], int, float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(kind, args, queue))
    proc.start()
    result: tuple[list[float], int, float] = queue.get(timeout=600)
    proc.join(30)
    return result


def _result(name: str, concurrency: int, run: tuple[list[float], int, float]) -> LoadResult:
    lat, errors, seconds = run
    return LoadResult(
        name=name,
        concurrency=concurrency,
        requests=len(lat),
        errors=errors,
        seconds=seconds,
        p50_ms=statistics.median(lat) if lat else float("nan"),
        p99_ms=_percentile(lat, 0.99),
    )


def http_load(
    name: str,
    url: str,
    path: str,
    body: bytes,
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 0.5,
    content_type: str = "application/json",
) -> LoadResult:
    """POST ``body`` (of ``content_type``) to ``url+path`` from ``concurrency`` keep-alive
    connections.

    A ``http://uuid:key@host:port`` URL sends that API key (HTTP Basic) with every request.
    """
    userinfo, _, hostport = url.removeprefix("http://").rpartition("@")
    host, port = hostport.split(":")
    auth = f"Basic {base64.b64encode(userinfo.encode()).decode()}" if userinfo else ""
    args = (host, int(port), path, body, concurrency, seconds, warmup, auth, content_type)
    run = _in_child("http", args)
    return _result(name, concurrency, run)


def nats_load(
    name: str,
    url: str,
    subject: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    concurrency: int,
    seconds: float,
    warmup: float = 0.5,
) -> LoadResult:
    """NATS request-reply to ``subject`` with ``concurrency`` requests in flight."""
    run = _in_child("nats", (url, subject, headers, body, concurrency, seconds, warmup))
    return _result(name, concurrency, run)
