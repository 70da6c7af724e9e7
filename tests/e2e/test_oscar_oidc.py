"""OSCAR's client with an OIDC token, as OSCAR's EGI users sign in: the token's namespace owns
the services; another namespace's token finds none; the service's own token still runs it."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
import requests
from oscar_python.client import Client

from tests.e2e.test_auth import oidc_platform, signing_key, token
from tests.e2e.test_oscar import fdl
from tests.support import Platform

__all__ = ["oidc_platform", "signing_key"]  # the fixtures this module uses


def oidc_client(platform: Platform, access_token: str) -> Client:
    return Client(
        {
            "cluster_id": "deepfaas",
            "endpoint": platform.url,
            "oidc_token": access_token,
            "ssl": False,
        }
    )


def test_oidc_tokens_own_their_namespace_services(
    oidc_platform: Platform, signing_key: Any
) -> None:
    oscar = oidc_client(oidc_platform, token(signing_key, deepfaas_ns="team-o"))
    service = fdl("by-token", bucket="oidc-in")
    service["output"][0]["path"] = "oidc-out/results"
    oscar.create_service(service)
    try:
        assert [s["name"] for s in oscar.list_services().json()] == ["by-token"]
        r = oscar.run_service("by-token", input="abc")  # the OIDC token itself, as Bearer
        assert base64.b64decode(r.text) == b"ABC"

        other = oidc_client(oidc_platform, token(signing_key, deepfaas_ns="team-p"))
        assert other.list_services().json() == []
        with pytest.raises(requests.HTTPError) as refused:
            other.get_service("by-token")
        assert refused.value.response is not None and refused.value.response.status_code == 404
        with pytest.raises(requests.HTTPError) as refused:
            other.run_service("by-token", input="abc")
        assert refused.value.response is not None and refused.value.response.status_code == 404

        service_token = oscar.get_service("by-token").json()["token"]
        r = httpx.post(
            f"{oidc_platform.url}/run/by-token",
            content=base64.b64encode(b"xyz"),
            headers={"authorization": f"Bearer {service_token}"},
            timeout=60,
        )
        assert r.status_code == 200 and base64.b64decode(r.text) == b"XYZ"
    finally:
        oscar.remove_service("by-token")
