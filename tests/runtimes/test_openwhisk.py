"""The `openwhisk` provider against a stand-in that follows the OpenWhisk API's published shapes.

The stand-in (`tests/runtimes/openwhisk_standin.py`) answers as the OpenWhisk REST API
documents; it is not our own OpenWhisk-compatible API, which this test does not depend on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runtimes.errors import (
    CapacityError,
    CredentialsError,
    ProvisioningError,
    RuntimeNotFoundError,
    SiteConfigError,
)
from runtimes.providers.base import Provider
from runtimes.providers.openwhisk import OpenWhiskProvider, action_body
from runtimes.types import RuntimeSpec
from tests.runtimes.openwhisk_standin import AUTH, StandIn, serve

SPEC = RuntimeSpec(name="greet", function="greet", module="functions.rank.handler:handle",
                   memory_mb=256, env={"LOG_LEVEL": "INFO"}, labels={"tier": "prod"})  # fmt: skip


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with serve() as state:
        yield state


@pytest.fixture
async def provider(standin: StandIn) -> AsyncIterator[OpenWhiskProvider]:
    p = OpenWhiskProvider("ow", standin.url, auth=AUTH)
    yield p
    await p.close()


async def test_provision_puts_an_action_with_overwrite(
    provider: OpenWhiskProvider, standin: StandIn
) -> None:
    assert isinstance(provider, Provider)
    handle = await provider.provision(SPEC)
    assert (handle.site, handle.kind, handle.name, handle.ref) == (
        "ow",
        "openwhisk",
        "greet",
        "_/greet",
    )
    action = standin.actions["_/greet"]
    assert action["exec"]["kind"] == "python:3"
    assert "functions.rank.handler" in action["exec"]["code"]
    assert action["limits"]["memory"] == 256
    assert {"key": "LOG_LEVEL", "value": "INFO", "init": True} in action["parameters"]
    await provider.provision(SPEC)  # overwrite: no 409
    assert standin.actions["_/greet"]["version"] == "0.0.2"
    status = await provider.status(handle)
    assert status.is_ready and "0.0.2" in status.message


async def test_scale_is_recorded_only_and_release_deletes(
    provider: OpenWhiskProvider, standin: StandIn
) -> None:
    handle = await provider.provision(SPEC)
    await provider.scale(handle, 3)
    assert (await provider.status(handle)).desired == 3
    assert [r for r in standin.requests if r[0] == "PATCH"] == []
    await provider.release(handle)
    assert "_/greet" not in standin.actions
    await provider.release(handle)  # twice is fine
    with pytest.raises(RuntimeNotFoundError):
        await provider.status(handle)


async def test_invoke_blocking_result_and_async_then_get_activation(
    provider: OpenWhiskProvider,
) -> None:
    await provider.provision(SPEC)
    assert await provider.invoke("greet", {"name": "Ada"}, result=True) == {"echo": {"name": "Ada"}}
    full = await provider.invoke("greet", {"name": "Ada"})
    assert full["response"]["success"] is True
    accepted = await provider.invoke("greet", {"x": 1}, blocking=False)
    record = await provider.get_activation(accepted["activationId"])
    assert record["response"]["result"] == {"echo": {"x": 1}}
    with pytest.raises(RuntimeNotFoundError):
        await provider.get_activation("0" * 32)


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [(401, CredentialsError, False), (403, CredentialsError, False),
     (404, RuntimeNotFoundError, False), (409, ProvisioningError, False),
     (413, ProvisioningError, False), (429, CapacityError, True),
     (500, ProvisioningError, True), (503, ProvisioningError, True)],
)  # fmt: skip
async def test_http_errors_become_provider_errors(
    provider: OpenWhiskProvider, standin: StandIn, status: int, error: type[Exception],
    retryable: bool,
) -> None:  # fmt: skip
    standin.fail_with = status
    with pytest.raises(error) as info:
        await provider.provision(SPEC)
    assert type(info.value) is error and str(status) in str(info.value)
    fields = info.value.fields  # type: ignore[attr-defined]
    assert fields["site"] == "ow" and fields["status"] == status
    assert fields["retryable"] is retryable


async def test_wrong_key_is_a_credentials_error(standin: StandIn) -> None:
    p = OpenWhiskProvider("ow", standin.url, auth="someone:wrong")
    with pytest.raises(CredentialsError, match="401"):
        await p.provision(SPEC)
    await p.close()


async def test_unreachable_api_is_retryable() -> None:
    from eventbus.server import free_port

    p = OpenWhiskProvider("ow", f"http://127.0.0.1:{free_port()}", auth=AUTH, timeout_s=2)
    with pytest.raises(ProvisioningError, match="unreachable") as info:
        await p.provision(SPEC)
    assert info.value.fields["retryable"] is True  # type: ignore[attr-defined]
    await p.close()


def test_bad_endpoint_and_bad_credentials_are_refused() -> None:
    with pytest.raises(SiteConfigError):
        OpenWhiskProvider("ow", "ftp://x", auth=AUTH)
    with pytest.raises(CredentialsError, match="uuid:key"):
        OpenWhiskProvider("ow", "http://127.0.0.1:1", auth="no-colon")


def test_an_image_spec_is_a_blackbox_action() -> None:
    spec = RuntimeSpec(name="inf", function="inf", image="ghcr.io/x/y:1")
    assert action_body(spec)["exec"] == {"kind": "blackbox", "image": "ghcr.io/x/y:1"}
    with pytest.raises(ProvisioningError, match="neither"):
        action_body(RuntimeSpec(name="z", function="z"))
