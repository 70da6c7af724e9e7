"""Models: warm inference through the platform beside in-process `predict`, and worker cold start.

Both paths classify the same PNG with the same trained version (the digits plug-in's default
version, trained by the platform's own `retrain` function), so the ratio is the platform's
overhead: HTTP, the bus, the durable activation record and the worker hop. The PNG goes in two
ways: inline in JSON to `/v1/functions/inference/invoke` (base64, as a JSON client sends it),
and as the raw `image/png` body of DEEPaaS's `/v2/models/digits/predict/`, which reaches the
worker inside a form as its own bytes. Concurrent calls meet in the worker's batcher.
"""

from __future__ import annotations

import base64
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from PIL import Image
from sklearn.datasets import load_digits

from bench.loadgen import http_load
from eventbus.server import EmbeddedNats
from runtimes.catalog.plugins import load_model_plugin
from tests.support import Platform, start_platform, wait_for

V1 = "/v1/functions/inference/invoke"
V2 = "/v2/models/digits/predict/"
TARGETS = {1: 0.6, 16: 0.85}
COLD = [f"inference-cold-{i}" for i in range(5)]


def digit_png() -> bytes:
    """One shipped digit, drawn 64x64 as a user would upload it."""
    import io

    x, _ = load_digits(return_X_y=True)
    ink = Image.fromarray(np.round(x[5].reshape(8, 8) / 16 * 255).astype(np.uint8))
    out = io.BytesIO()
    ink.resize((64, 64), Image.Resampling.NEAREST).save(out, "PNG")
    return out.getvalue()


def _publish(client: httpx.Client) -> None:
    r = client.post("/v1/catalog/modules", json={"name": "digits"})
    assert r.status_code in (201, 409), r.text
    r = client.post(
        "/v1/functions/retrain/invoke?timeout=300", json={"model": "digits", "default": True}
    )
    assert r.status_code == 200, r.text
    assert r.json()["promoted"], r.json()


def direct(png: bytes, seconds: float) -> tuple[float, float]:
    """In-process: the same plug-in, the same kind of version, one predict after another."""
    plugin = load_model_plugin("digits")
    model = plugin.load(plugin.train_default().artifact)
    plugin.predict(model, data=png)
    latencies = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        s = time.perf_counter()
        plugin.predict(model, data=png)
        latencies.append((time.perf_counter() - s) * 1000)
    return len(latencies) / (time.perf_counter() - t0), statistics.median(latencies)


def cold_starts(plat: Platform, body: bytes, n: int) -> list[tuple[float, float]]:
    """Spawn-to-first-answer of fresh inference workers: (wall ms, recorded init ms)."""
    out = []
    with plat.client(timeout=120) as client:
        spec = client.get("/v1/functions/inference").json()
        keep = {k: spec[k] for k in ("handler", "timeout_s", "memory_mb", "concurrency")}
        for name in COLD[:n]:
            client.put(f"/v1/functions/{name}", json={**keep, "min_scale": 0}).raise_for_status()
            t0 = time.perf_counter()
            r = client.post(f"/v1/functions/{name}/invoke", content=body)
            wall = (time.perf_counter() - t0) * 1000
            assert r.status_code == 200, r.text
            record = client.get(f"/v1/activations/{r.headers['x-activation-id']}").json()
            out.append((wall, float(record.get("init_ms") or 0.0)))
            client.delete(f"/v1/functions/{name}")
    return out


def run(seconds: float) -> list[str]:
    """Warm throughput via the gateway vs in-process, and inference worker cold start."""
    png = digit_png()
    body = orjson.dumps({"model": "digits", "data": base64.b64encode(png).decode()})
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        nats = EmbeddedNats(store_dir=Path(tmp) / "nats").start()
        plat = start_platform(
            nats,
            Path(tmp) / "platform",
            builtins="inference,retrain",
            # the cold-start copies of `inference` need the bus as the built-in has it
            trusted_functions=",".join(["inference", "retrain", *COLD]),
            ns_rate_per_s=1_000_000,
            ns_burst=1_000_000,
        )
        try:
            with plat.client(timeout=300) as client:
                _publish(client)
                spec: dict[str, Any] = client.get("/v1/functions/inference").json()
                client.put(
                    "/v1/functions/inference",
                    json={k: spec[k] for k in ("handler", "timeout_s", "memory_mb", "description")}
                    | {"min_scale": 1, "max_scale": 1, "concurrency": 64},
                ).raise_for_status()
                wait_for(
                    lambda: (
                        client.post("/v1/functions/inference/invoke", content=body).status_code
                        == 200
                    ),
                    timeout=60,
                )
            rate, p50 = direct(png, seconds)
            lines.append(
                f"{'floor: in-process predict (same PNG)':<44} c=1   p50 {p50:7.3f} ms  "
                f"{rate:9.0f} images/s"
            )
            ways = (
                ("v1 invoke, PNG base64 in JSON", V1, body, "application/json"),
                ("v2 predict, raw image/png", V2, png, "image/png"),
            )
            for label, path, payload, content_type in ways:
                for c in (1, 16):
                    load = http_load(
                        f"inference: {label}",
                        plat.auth_url,
                        path,
                        payload,
                        concurrency=c,
                        seconds=seconds,
                        content_type=content_type,
                    )
                    lines.append(load.row())
                    lines.append(
                        f"  {label} at c={c}: {load.rps:,.0f} images/s = "
                        f"{load.rps / rate:.2f}x in-process ({rate:,.0f} images/s; "
                        f"target {TARGETS[c]}x)"
                    )
            starts = cold_starts(plat, body, 5)
            walls = sorted(w for w, _ in starts)
            inits = sorted(i for _, i in starts)
            lines.append(
                f"inference worker cold start (spawn -> first answer, n={len(starts)}): "
                f"p50 {statistics.median(walls):.0f} ms, max {walls[-1]:.0f} ms; recorded "
                f"init p50 {statistics.median(inits):.0f} ms"
            )
        finally:
            plat.stop()
            nats.stop()
    return lines
