"""Placement and deployment records against a real nats-server, with local providers.

The ranker is a fixed list here (the `deploy` function asks `rank`; tests/e2e/test_placement.py
covers that path); sites are local providers whose runtimes ask for no workers (min_scale 0).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from eventbus.codec import from_nats
from eventbus.connection import Bus
from eventbus.errors import NotFoundError
from eventbus.streams import ensure_layout
from runtimes.errors import CapacityError, CredentialsError, SiteConfigError
from runtimes.placement.deployments import Deployments, DeploymentStatus, DeploymentStore, Desired
from runtimes.placement.placer import PlacementError, Placer
from runtimes.placement.sites import SitesFile
from runtimes.providers.kubernetes import KubernetesProvider
from runtimes.providers.local import LocalProvider
from runtimes.providers.openwhisk import OpenWhiskProvider
from runtimes.providers.registry import ProviderOptions, ProviderRegistry, declared_gpus
from runtimes.types import GpuRequest, RuntimeSpec

SITES = SitesFile.model_validate({"sites": [
    {"name": "a", "kind": "local", "region": "r", "sla": {"availability": 0.9},
     "capacity": {"cpus": 4, "memory_mb": 4096,
                  "gpus": [{"model": "a100", "vendor": "nvidia", "count": 2}]}},
    {"name": "b", "kind": "local", "region": "r", "sla": {"availability": 0.9},
     "capacity": {"cpus": 4, "memory_mb": 4096}},
    {"name": "k", "kind": "kubernetes", "region": "r", "sla": {"availability": 0.9},
     "endpoint": "https://k8s.example.org", "credentials": {"env": "K_TOKEN"},
     "capacity": {"cpus": 4, "memory_mb": 4096}, "labels": {"namespace": "ml"}},
    {"name": "w", "kind": "openwhisk", "region": "r", "sla": {"availability": 0.9},
     "endpoint": "http://127.0.0.1:3233", "credentials": {"file": "ow.auth"},
     "capacity": {"cpus": 4, "memory_mb": 4096}},
]})  # fmt: skip
SPEC = RuntimeSpec(name="svc", function="svc", module="functions.rank.handler:handle")
GPU_SPEC = SPEC.model_copy(update={"gpu": GpuRequest(count=1, model="a100")})


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, name="test")
    await ensure_layout(b.js)
    kv = await b.kv("deployments")
    for key in await _keys(kv):
        await kv.purge(key)
    yield b
    await b.close()


async def _keys(kv: Any) -> list[str]:
    try:
        return list(await kv.keys())
    except Exception:
        return []


@pytest.fixture
async def registry() -> AsyncIterator[ProviderRegistry]:
    r = ProviderRegistry(SITES, ProviderOptions(local_gpus=()))
    yield r
    await r.close()


def service(bus: Bus, registry: ProviderRegistry, order: list[str]) -> Deployments:
    async def ranker(spec: RuntimeSpec, placement: dict[str, Any]) -> list[str]:
        return list(order)

    return Deployments(DeploymentStore(bus), Placer(bus, registry.get, poll_s=0.01), ranker)


async def events(bus: Bus, deployment: str) -> list[tuple[str, dict[str, Any]]]:
    import orjson

    sub = await bus.js.subscribe("events.runtime.>", ordered_consumer=True)
    found = []
    while True:
        try:
            msg = await sub.next_msg(timeout=0.3)
        except Exception:
            break
        event = from_nats(msg.headers, msg.data)
        if event.subject == deployment:
            found.append((event.type.rsplit(".", 1)[1], orjson.loads(event.data or b"{}")))
    await sub.unsubscribe()
    return found


def test_registry_builds_each_kind_and_resolves_credentials(tmp_path: Path) -> None:
    (tmp_path / "ow.auth").write_text("uuid:key\n")
    registry = ProviderRegistry(
        SITES, ProviderOptions(env={"K_TOKEN": "t"}, secrets_dir=tmp_path, local_gpus=())
    )
    a = registry.get("a")
    assert isinstance(a, LocalProvider) and [g.model for g in a.gpus] == ["a100", "a100"]
    assert isinstance(registry.get("b"), LocalProvider) and registry.get("b") is registry.get("b")
    k = registry.get("k")
    assert isinstance(k, KubernetesProvider) and k.namespace == "ml"
    assert isinstance(registry.get("w"), OpenWhiskProvider)
    with pytest.raises(SiteConfigError, match="no site 'zz'"):
        registry.get("zz")
    assert [g.index for g in declared_gpus(SITES.sites[0])] == [0, 1]


def test_missing_credentials_are_a_clear_error() -> None:
    registry = ProviderRegistry(SITES, ProviderOptions(env={}))
    with pytest.raises(CredentialsError, match="K_TOKEN is not set"):
        registry.get("k")
    with pytest.raises(CredentialsError, match="secrets dir"):
        registry.get("w")


def test_an_unknown_site_kind_is_refused() -> None:
    bad = SITES.model_dump(mode="json")
    bad["sites"][1]["kind"] = "mainframe"
    with pytest.raises(ValueError, match="unknown site kind 'mainframe'"):
        SitesFile.model_validate(bad)


async def test_capacity_failure_falls_through_to_the_next_site(
    bus: Bus, registry: ProviderRegistry
) -> None:
    deployments = service(bus, registry, ["b", "a"])  # b has no GPU: CapacityError, then a
    record = await deployments.apply("gpu", GPU_SPEC, {})
    assert record.status is DeploymentStatus.READY and record.site == "a"
    assert [(h["site"], h["ok"], h["code"]) for h in record.history] == [
        ("b", False, CapacityError.code), ("a", True, "")]  # fmt: skip
    got = [(p, d["site"]) for p, d in await events(bus, "gpu")]
    assert got == [("provisioning", "b"), ("failed", "b"), ("provisioning", "a"), ("ready", "a")]


async def test_all_sites_failing_is_a_failed_record(bus: Bus, registry: ProviderRegistry) -> None:
    deployments = service(bus, registry, ["b", "k"])
    with pytest.raises(PlacementError) as info:
        await deployments.apply("nowhere", GPU_SPEC, {})
    assert "b: no GPU free" in str(info.value) and "K_TOKEN" in str(info.value)
    record = await deployments.store.get("nowhere")
    assert record.status is DeploymentStatus.FAILED and record.handle is None


async def test_update_is_rolling_and_undeploy_releases(
    bus: Bus, registry: ProviderRegistry
) -> None:
    first = await service(bus, registry, ["a"]).apply("roll", SPEC, {})
    new_spec = SPEC.model_copy(update={"name": "svc-v2", "function_version": 2})
    second = await service(bus, registry, ["b"]).apply("roll", new_spec, {})
    assert (first.version, first.site, second.version, second.site) == (1, "a", 2, "b")
    phases = [(p, d["site"]) for p, d in await events(bus, "roll")]
    # the new runtime was ready before the old one was released
    assert phases[-2:] == [("ready", "b"), ("released", "a")]
    assert (await registry.get("b").status(second.handle.handle())).is_ready  # type: ignore[union-attr]
    again = await service(bus, registry, ["a"]).redeploy("roll")
    assert again.version == 3 and again.site == "a"
    gone = await service(bus, registry, ["a"]).undeploy("roll")
    assert gone.desired is Desired.RELEASED and gone.status is DeploymentStatus.RELEASED
    assert (await events(bus, "roll"))[-1][0] == "released"
    with pytest.raises(NotFoundError):
        await service(bus, registry, ["a"]).undeploy("never")


async def test_reconcile_replaces_gone_runtimes_and_leaves_released_ones(
    bus: Bus, registry: ProviderRegistry
) -> None:
    deployments = service(bus, registry, ["a"])
    await deployments.apply("kept", SPEC.model_copy(update={"name": "kept"}), {})
    await deployments.apply("lost", SPEC.model_copy(update={"name": "lost"}), {})
    await deployments.apply("off", SPEC.model_copy(update={"name": "off"}), {})
    await deployments.undeploy("off")
    fresh = ProviderRegistry(SITES, ProviderOptions(local_gpus=()))  # a restart: "a" is empty
    kept = await registry.get("a").provision(SPEC.model_copy(update={"name": "kept"}))
    fresh.add("a", registry.get("a"))
    await registry.get("a").release(
        kept.__class__(kept.site, kept.kind, "lost", "lost")
    )  # "lost" is gone from the site
    changed = await service(bus, fresh, ["a"]).reconcile()
    assert [r.name for r in changed] == ["lost"]
    assert changed[0].status is DeploymentStatus.READY and changed[0].version == 2
    assert (await deployments.store.get("off")).status is DeploymentStatus.RELEASED
