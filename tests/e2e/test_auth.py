"""Who may call: API keys over HTTP Basic, OIDC bearer tokens, anonymous reads, the CLI."""

from __future__ import annotations

import base64
import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from cli.main import app as cli_app
from eventbus.server import EmbeddedNats, free_port
from tests.support import Platform, start_platform, wait_for

ISSUER = "https://idp.example.test"
AUDIENCE = "deepfaas-tests"


def new_key(client: httpx.Client, namespace: str) -> dict[str, Any]:
    r = client.post("/v1/auth/keys", json={"namespace": namespace, "description": "test"})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def basic(credential: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(credential.encode()).decode()}


def test_a_request_without_credentials_is_401(platform: Platform) -> None:
    r = httpx.get(f"{platform.url}/v1/functions")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    assert r.headers["content-type"] == "application/problem+json"
    assert httpx.post(f"{platform.url}/api/v1/namespaces/_/actions/x").status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"not-a-uuid:secret").decode(),
        "Basic " + base64.b64encode(b"7d114824-4712-4d0a-b223-818e84c9f9ce:").decode(),
        "Basic",
        "Digest username=x",
        "Bearer some.jwt.token",  # no OIDC issuer configured on this platform
    ],
)
def test_malformed_credentials_are_401(platform: Platform, header: str) -> None:
    r = httpx.get(f"{platform.url}/v1/functions", headers={"authorization": header})
    assert r.status_code == 401, r.text


def test_unknown_keys_and_wrong_secrets_are_401(platform: Platform, client: httpx.Client) -> None:
    unknown = f"{uuid.uuid4()}:{'a' * 64}"
    assert httpx.get(f"{platform.url}/v1/functions", headers=basic(unknown)).status_code == 401
    key_id = platform.auth.split(":")[0]
    wrong = httpx.get(f"{platform.url}/v1/functions", headers=basic(f"{key_id}:{'b' * 64}"))
    assert wrong.status_code == 401
    assert client.get("/v1/functions").status_code == 200


def test_a_revoked_key_is_refused_at_once(platform: Platform, client: httpx.Client) -> None:
    made = new_key(client, "revoking")
    with platform.client(auth=made["key"]) as theirs:
        assert theirs.get("/v1/functions").status_code == 200
        revoked = client.delete(f"/v1/auth/keys/{made['uuid']}")
        assert revoked.status_code == 200 and revoked.json()["revoked"]
        assert theirs.get("/v1/functions").status_code == 401
    listed = client.get("/v1/auth/keys", params={"namespace": "revoking"}).json()
    assert [k["uuid"] for k in listed] == [made["uuid"]]
    assert all("digest" not in k and "salt" not in k and "key" not in k for k in listed)


def test_secrets_never_reach_the_logs(platform: Platform, client: httpx.Client) -> None:
    made = new_key(client, "logged")
    secret = made["key"].split(":")[1]
    # one character changed (a key that ends in "x" must not be "changed" to itself: 1 run in 64)
    wrong = made["key"][:-1] + ("x" if made["key"][-1] != "x" else "y")
    refused = httpx.get(f"{platform.url}/v1/nothing", headers=basic(wrong))
    assert refused.status_code == 401, refused.text
    with platform.client(auth=made["key"]) as theirs:
        r = theirs.get("/v1/functions")
        assert r.headers["x-request-id"]
    wait_for(lambda: refused.headers["x-request-id"] in platform.log_text())  # refusal logged
    assert secret not in platform.log_text()


def test_a_key_of_another_namespace_is_refused_in_the_path(
    platform: Platform, client: httpx.Client
) -> None:
    made = new_key(client, "elsewhere")
    with platform.client(auth=made["key"]) as theirs:
        assert theirs.get("/api/v1/namespaces/default/actions").status_code == 403
        assert theirs.get("/api/v1/namespaces/_/actions").json() == []
        assert theirs.get("/api/v1/namespaces/elsewhere/actions").status_code == 200
        # buckets belong to namespaces: it lists its own (none), never default's
        assert client.put("/v1/buckets/default-only").status_code in (200, 201)
        listed = theirs.get("/v1/buckets")
        assert listed.status_code == 200 and "default-only" not in listed.text
        assert theirs.get("/v1/buckets/default-only/objects").status_code == 404
        assert theirs.post("/v1/auth/keys", json={"namespace": "default"}).status_code == 403
        assert theirs.get("/v1/auth/keys").json()[0]["namespace"] == "elsewhere"


def test_anonymous_reads_only_where_they_make_sense(platform: Platform) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert httpx.get(platform.url + path).status_code == 200, path
    for path in ("/v1/catalog/modules", "/v2/models/"):
        assert httpx.get(platform.url + path).status_code != 401, path
        assert httpx.post(platform.url + path, json={}).status_code == 401, path
    assert httpx.get(f"{platform.url}/v1/activations").status_code == 401


def test_the_auth_cli(platform: Platform) -> None:
    runner = CliRunner()
    base = ["--auth", platform.auth]
    url = ["--url", platform.url]
    made = runner.invoke(cli_app, [*base, "auth", "key", "create", "-n", "cli-ns", *url, "--json"])
    assert made.exit_code == 0, made.output
    key = orjson.loads(made.stdout)
    listed = runner.invoke(cli_app, [*base, "auth", "key", "list", "-n", "cli-ns", *url, "--json"])
    assert [k["uuid"] for k in orjson.loads(listed.stdout)] == [key["uuid"]]
    own = runner.invoke(cli_app, ["--auth", key["key"], "fn", "list", *url, "--json"])
    assert own.exit_code == 0, own.output
    gone = runner.invoke(cli_app, [*base, "auth", "key", "revoke", key["uuid"], *url, "--json"])
    assert gone.exit_code == 0 and orjson.loads(gone.stdout)["revoked"]
    refused = runner.invoke(cli_app, ["--auth", key["key"], "fn", "list", *url])
    assert refused.exit_code == 1 and "401" in refused.output
    no_key = runner.invoke(cli_app, ["fn", "list", *url], env={"DEEPFAAS_DATA_DIR": "/nonexistent"})
    assert no_key.exit_code == 1 and "401" in no_key.output


def test_the_first_key_file_is_private(platform: Platform) -> None:
    path = platform.data_dir / "auth"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().strip() == platform.auth


# --- OIDC bearer tokens ------------------------------------------------------------------


class _Jwks(http.server.BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def oidc_platform(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory, signing_key: Any
) -> Iterator[Platform]:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    _Jwks.body = orjson.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = start_platform(
        nats_server,
        Path(tmp_path_factory.mktemp("oidc")),
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=f"http://127.0.0.1:{port}/jwks.json",
        oidc_namespace_claim="deepfaas_ns",
    )
    yield started
    started.stop()
    server.shutdown()
    server.server_close()


def token(key: Any, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
    body.update({"deepfaas_ns": "team-a", **claims})
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, "RS256", headers={"kid": kid}
    )


def bearer(platform: Platform, value: str, path: str = "/api/v1/namespaces") -> httpx.Response:
    return httpx.get(platform.url + path, headers={"authorization": f"Bearer {value}"})


def test_a_good_token_is_accepted_with_its_namespace(
    oidc_platform: Platform, signing_key: Any
) -> None:
    r = bearer(oidc_platform, token(signing_key))
    assert r.status_code == 200, r.text
    assert r.json() == ["team-a"]
    assert bearer(oidc_platform, token(signing_key), "/v1/functions").json() == []
    with oidc_platform.client() as admin:  # keys still work beside tokens
        assert admin.get("/v1/functions").status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 120},
        {"aud": "someone-else"},
        {"iss": "https://evil.example.test"},
        {"deepfaas_ns": None},
        {"deepfaas_ns": "Not A Namespace"},
    ],
)
def test_bad_tokens_are_401(oidc_platform: Platform, signing_key: Any, claims: Any) -> None:
    assert bearer(oidc_platform, token(signing_key, **claims)).status_code == 401


def test_a_wrongly_signed_token_is_401(oidc_platform: Platform) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert bearer(oidc_platform, token(other)).status_code == 401
    assert bearer(oidc_platform, token(other, kid="unknown")).status_code == 401
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "deepfaas_ns": "x"}, None, "none")
    assert bearer(oidc_platform, unsigned).status_code == 401
