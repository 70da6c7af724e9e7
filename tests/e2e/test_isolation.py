"""No namespace reads or touches another's objects: every route, native and OpenWhisk."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support import Platform, wait_activation, wait_for

MARKER = "isolation-marker-7f3a"
CODE = f"def main(args):\n    print('{MARKER}')\n    return {{'secret': '{MARKER}'}}\n"
OW = "/api/v1/namespaces"


@pytest.fixture(scope="module")
def owned(platform: Platform) -> Iterator[dict[str, str]]:
    """Objects of the default namespace, each holding the marker somewhere."""
    with platform.client() as c:
        r = c.put(f"{OW}/_/actions/iso-fn", json={"exec": {"kind": "python:3", "code": CODE}})
        assert r.status_code == 200, r.text
        done = c.post(f"{OW}/_/actions/iso-fn?blocking=true", json={})
        assert done.status_code == 200, done.text
        trigger = {
            "function": "iso-fn",
            "event_types": ["com.example.iso"],
            "params": {"m": MARKER},
        }
        assert c.put("/v1/triggers/iso-trig", json=trigger).status_code == 201
        assert c.put(f"{OW}/_/triggers/iso-ow", json={}).status_code == 200
        rule = c.put(f"{OW}/_/rules/iso-rule", json={"trigger": "iso-ow", "action": "iso-fn"})
        assert rule.status_code == 200
        package = {"parameters": [{"key": "m", "value": MARKER}]}
        assert c.put(f"{OW}/_/packages/iso-pkg", json=package).status_code == 200
        code = {"exec": {"kind": "python:3", "code": CODE}}
        assert c.put(f"{OW}/_/actions/iso-pkg/iso-fn", json=code).status_code == 200
        binding = {"binding": {"namespace": "_", "name": "iso-pkg"}}
        assert c.put(f"{OW}/_/packages/iso-bind", json=binding).status_code == 200
        seq = {"exec": {"kind": "sequence", "components": ["/_/iso-fn", "/_/iso-pkg/iso-fn"]}}
        assert c.put(f"{OW}/_/actions/iso-seq", json=seq).status_code == 200
        assert c.put("/v1/buckets/iso-bucket").status_code in (200, 201)
        assert c.put("/v1/buckets/iso-bucket/objects/o.txt", content=MARKER).status_code == 201
        sub = c.post("/v1/subscriptions", json={"sink": "nats:iso.sink", "types": ["x.y"]})
        key = c.post("/v1/auth/keys", json={"namespace": "intruder"}).json()
        yield {
            "name": "iso-fn",
            "activation_id": done.headers["x-openwhisk-activation-id"],
            "subscription_id": sub.json().get("id", "none") if sub.status_code == 201 else "none",
            "bucket": "iso-bucket",
            "key": "o.txt",
            "key_id": platform.auth.split(":")[0],
            "intruder": key["key"],
        }


def fill(path: str, owned: dict[str, str], ns: str) -> str:
    """The route's path with the default namespace's objects in its parameters."""
    values = {**owned, "ns": ns, "seq": "1", "package": "iso-pkg"}

    def one(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        return values.get(name, "iso-rule" if "rule" in path else "iso-ow")

    return re.sub(r"\{([^}]+)\}", one, path)


def routes(client: httpx.Client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    found = []
    for path, item in spec["paths"].items():
        for method in item:
            if method in ("get", "put", "post", "delete", "head", "patch"):
                found.append((method.upper(), path))
    return found


def test_every_route_refuses_a_foreign_key(platform: Platform, owned: dict[str, str]) -> None:
    with platform.client() as admin:
        every = routes(admin)
    assert len(every) > 40
    public = {"/healthz", "/readyz", "/metrics"}
    tried = 0
    with platform.client(auth=owned["intruder"], timeout=10) as intruder:
        for method, path in every:
            if path in public or path.startswith(("/v1/catalog", "/v2/models")):
                continue
            if path == "/v1/events/stream":  # endless: the caller's own events (test_tenant_events)
                continue
            for ns in ("default", "_"):
                if "{ns}" not in path and ns == "_":
                    continue
                url = fill(path, owned, ns)
                r = intruder.request(method, url, json={})
                tried += 1
                assert MARKER not in r.text, (method, url, r.text)
                assert owned["activation_id"] not in r.text or owned["activation_id"] in url
                if "{ns}" in path and ns == "default":  # another's namespace: refused
                    assert r.status_code in (400, 403, 422), (method, url, r.text)
                elif (method, path) == ("PUT", "/v1/buckets/{bucket}"):  # names are global
                    assert r.status_code == 409 and "taken" in r.text, (method, url, r.text)
                elif "{ns}" not in path and "{" in path:  # names default's object: not found
                    assert r.status_code in (400, 403, 404, 405, 422), (method, url, r.text)
                else:  # lists, and writes into the intruder's own namespace
                    assert r.status_code < 500, (method, url, r.text)
                    assert '"namespace":"default"' not in r.text, (method, url, r.text)
    assert tried > 40


def test_default_objects_survive_the_sweep(platform: Platform, owned: dict[str, str]) -> None:
    test_every_route_refuses_a_foreign_key(platform, owned)
    with platform.client() as admin:
        assert admin.get("/v1/functions/iso-fn").status_code == 200
        assert admin.get("/v1/triggers/iso-trig").json()["enabled"] is True
        assert admin.get(f"{OW}/_/rules/iso-rule").json()["status"] == "active"
        assert admin.get(f"{OW}/_/triggers/iso-ow").status_code == 200
        assert admin.get(f"{OW}/_/packages/iso-pkg").json()["actions"][0]["name"] == "iso-fn"
        assert admin.get(f"{OW}/_/packages/iso-bind").status_code == 200
        assert admin.get(f"{OW}/_/actions/iso-seq").json()["exec"]["kind"] == "sequence"
        assert admin.get("/v1/buckets/iso-bucket/objects/o.txt").text == MARKER
        assert admin.get(f"/v1/activations/{owned['activation_id']}").status_code == 200
        keys = admin.get("/v1/auth/keys", params={"namespace": "default"}).json()
        assert all(k["revoked"] is None for k in keys if k["uuid"] == owned["key_id"])


def test_the_intruder_sees_only_its_own(platform: Platform, owned: dict[str, str]) -> None:
    with platform.client(auth=owned["intruder"]) as intruder:
        code = {"exec": {"kind": "python:3", "code": "def main(a):\n    return {'me': 1}\n"}}
        assert intruder.put(f"{OW}/_/actions/iso-fn", json=code).status_code == 200
        r = intruder.post("/v1/functions/iso-fn/invoke", json={})
        assert r.json() == {"me": 1}
        record = wait_activation(intruder, r.headers["x-activation-id"])
        assert record["function"] == "iso-fn" and record["namespace"] == "intruder"
        spy = {"name": "spy", "function": "iso-fn", "bucket": "iso-bucket"}
        made = intruder.post("/v1/triggers", json=spy)
        assert made.status_code == 201, made.text
        # it sees only the intruder's events: uploads to default's bucket never reach it
        assert made.json()["filters"] == []
        names = [f["name"] for f in intruder.get("/v1/functions").json()]
        assert names == ["iso-fn"]
        acts = intruder.get("/v1/activations").json()
        assert {a["id"] for a in acts} == {record["id"]}
        assert {a["namespace"] for a in acts} == {"intruder"}
        assert [a["namespace"] for a in intruder.get(f"{OW}/_/activations").json()] == ["intruder"]
        # default's packages, bindings and sequences: invisible, not runnable, not bindable
        for path in ("packages/iso-pkg", "packages/iso-bind", "actions/iso-seq"):
            assert intruder.get(f"{OW}/_/{path}").status_code == 404, path
            assert intruder.get(f"{OW}/default/{path}").status_code == 403, path
        for path in ("actions/iso-seq", "actions/iso-pkg/iso-fn", "actions/iso-bind/iso-fn"):
            for ns in ("_", "default"):
                ran = intruder.post(f"{OW}/{ns}/{path}?blocking=true", json={})
                assert ran.status_code in (403, 404) and MARKER not in ran.text, (ns, path)
        steal = {"binding": {"namespace": "default", "name": "iso-pkg"}}
        assert intruder.put(f"{OW}/_/packages/stolen", json=steal).status_code == 403
        chain = {"exec": {"kind": "sequence", "components": ["/default/iso-fn"]}}
        assert intruder.put(f"{OW}/_/actions/stolen", json=chain).status_code == 403
        own_chain = {"exec": {"kind": "sequence", "components": ["/_/iso-seq"]}}
        assert intruder.put(f"{OW}/_/actions/stolen", json=own_chain).status_code == 400
        assert "stolen" not in intruder.get(f"{OW}/_/actions").text
        assert intruder.get(f"{OW}/_/packages").json() == [] or all(
            p["namespace"] == "intruder" for p in intruder.get(f"{OW}/_/packages").json()
        )
    with platform.client() as admin:  # the same name in two namespaces: two functions
        mine = admin.post("/v1/functions/iso-fn/invoke", json={})
        assert mine.json() == {"secret": MARKER}

        def listed() -> set[str]:
            found = admin.get("/v1/activations", params={"limit": 200}).json()
            ids = {a["id"] for a in found}
            return ids if mine.headers["x-activation-id"] in ids else set()

        assert record["id"] not in wait_for(listed)  # its own is listed, the other's not
