"""API keys (hashing, parsing, storage against a real nats-server), policy, quotas, OIDC."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from eventbus.connection import Bus
from eventbus.server import EmbeddedNats
from gateway.auth import AuthError
from gateway.auth.keys import AUTH_KV, KeyStore, digest, new_secret, parse_credential
from gateway.auth.oidc import OidcVerifier
from gateway.auth.policy import allowed, is_anonymous, is_invocation
from gateway.auth.quota import Quotas
from gateway.auth.settings import AuthSettings
from tests.support import eventually


def test_secrets_are_long_random_and_hashed_with_their_salt() -> None:
    a, b = new_secret(), new_secret()
    assert len(a) == 64 and a.isalnum() and a != b
    assert digest(a, b"salt1") == digest(a, b"salt1")
    assert digest(a, b"salt1") != digest(a, b"salt2")
    assert a not in digest(a, b"salt1")


@pytest.mark.parametrize(
    "text", ["", "nocolon", "not-a-uuid:key", "3f1e4f8e-0000-4000-8000-000000000000:"]
)
def test_malformed_credentials(text: str) -> None:
    with pytest.raises(AuthError):
        parse_credential(text)


def test_a_credential_parses() -> None:
    key_id = "3F1E4F8E-0000-4000-8000-000000000000"
    assert parse_credential(f"{key_id}:s3cr:et") == (key_id.lower(), "s3cr:et")


async def test_the_key_store(nats_server: EmbeddedNats) -> None:
    bus = await Bus.connect(nats_server.admin_url, name="t", prefix="io.deepfaas")
    try:
        keys = KeyStore(bus)
        info, credential = await keys.create("team-a", "ci")
        principal = await keys.verify(credential)
        assert principal.namespace == "team-a" and principal.subject == info.uuid
        stored = (await (await bus.js.key_value(AUTH_KV)).get(info.uuid)).value or b""
        assert credential.split(":")[1].encode() not in stored  # never in plain text
        with pytest.raises(AuthError):
            await keys.verify(credential[:-1] + ("x" if credential[-1] != "x" else "y"))
        assert [k.uuid for k in await keys.list("team-a")] == [info.uuid]
        assert "team-a" in await keys.namespaces()
        await keys.revoke(info.uuid)
        with pytest.raises(AuthError):
            await keys.verify(credential)
        with pytest.raises(ValueError):
            await keys.create("Not Valid")
    finally:
        await bus.close()


async def test_a_key_revoked_elsewhere_is_refused_by_a_caching_gateway(
    nats_server: EmbeddedNats,
) -> None:
    """Two key stores stand for two gateways: one caches checked keys, the other revokes."""
    bus = await Bus.connect(nats_server.admin_url, name="t2", prefix="io.deepfaas")
    gateway = KeyStore(bus)
    await gateway.start()
    try:
        info, credential = await KeyStore(bus).create("team-b")
        await eventually(lambda: gateway._watching)
        await gateway.verify(credential)
        assert info.uuid in gateway._cache  # the second check needs no KV read
        await KeyStore(bus).revoke(info.uuid)
        await eventually(lambda: info.uuid not in gateway._cache)
        with pytest.raises(AuthError):
            await gateway.verify(credential)
    finally:
        await gateway.stop()
        await bus.close()


def test_policy() -> None:
    assert is_anonymous("GET", "/healthz") and is_anonymous("GET", "/openapi.json")
    assert is_anonymous("GET", "/v1/catalog/modules") and is_anonymous("HEAD", "/v2/models/x")
    assert not is_anonymous("POST", "/v1/catalog/modules")
    assert not is_anonymous("GET", "/v1/catalogue") and not is_anonymous("GET", "/v1/functions")
    assert allowed("default", "/v1/runtimes/x") and not allowed("team", "/v1/runtimes/x")
    owned_paths = ("/v1/buckets/x", "/v1/subscriptions", "/v1/events", "/v1/events/stream")
    for owned in (*owned_paths, "/v1/dlq", "/v1/dlq/3/replay"):
        assert allowed("team", owned)  # the routes check the owner
    assert allowed("team", "/v1/functions/f/runtime") and allowed("team", "/v1/functions/f")
    assert is_invocation("POST", "/v1/functions/f/invoke")
    assert is_invocation("POST", "/api/v1/namespaces/_/actions/f")
    assert not is_invocation("PUT", "/api/v1/namespaces/_/actions/f")


def test_quotas() -> None:
    quotas = Quotas(rate=10, burst=2, concurrency=1)
    assert quotas.take("a") == 0 and quotas.take("a") == 0
    assert 0 < quotas.take("a") <= 0.1
    assert quotas.take("b") == 0  # namespaces do not share
    assert quotas.enter("a") and not quotas.enter("a") and quotas.enter("b")
    quotas.leave("a")
    assert quotas.enter("a")


def test_quotas_take_a_batch_at_once() -> None:
    quotas = Quotas(rate=10, burst=5, concurrency=1)
    assert quotas.take("a", 4) == 0
    assert 0.1 < quotas.take("a", 3) <= 0.2  # one token left: nothing is taken
    assert quotas.take("a") == 0
    assert is_invocation("POST", "/v1/functions/f/invocations")


def _token(key: rsa.RSAPrivateKey, **claims: object) -> str:
    now = int(time.time())
    body = {"iss": "https://idp", "aud": "df", "exp": now + 60, "namespace": "team-a", **claims}
    return jwt.encode(body, key, "RS256", headers={"kid": "file-key"})


async def test_oidc_with_a_jwks_file(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [{**jwk, "kid": "file-key", "alg": "RS256"}]}))
    verifier = OidcVerifier(
        AuthSettings(oidc_issuer="https://idp", oidc_audience="df", oidc_jwks_file=path)
    )
    assert (await verifier.verify(_token(key))).namespace == "team-a"
    for claims in ({"exp": int(time.time()) - 100}, {"aud": "x"}, {"namespace": "A B"}):
        with pytest.raises(AuthError):
            await verifier.verify(_token(key, **claims))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError):
        await verifier.verify(_token(other))
    with pytest.raises(ValueError):
        OidcVerifier(AuthSettings(oidc_issuer="https://idp", oidc_audience="df"))
