"""Binary inputs travel as bytes end to end, never as base64 in JSON.

A non-UTF-8 body on `/v1/functions/{name}/invoke` (octet-stream) reaches an untyped handler as
the same bytes; a form reaches a typed handler as its fields, the file as bytes; a PNG sent to
`/v2/models/{name}/predict/` (raw `image/*` or multipart) crosses the bus inside a form as its
own bytes and is predicted on. The bus side is read off the wire: a plain subscription on the
function's subjects receives a copy of every invocation sent to its workers.

Against the real platform (`deepfaas up`, real nats-server, sandboxed user functions, the
built-in `inference` with the digits plug-in).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from nats.aio.msg import Msg

from eventbus.codec import from_nats
from eventbus.connection import Bus
from eventbus.forms import decode_form, encode_form, is_form
from eventbus.server import EmbeddedNats
from eventbus.subjects import invoke_subject, run_subject
from tests.models.samples import digits, png
from tests.support import Platform, eventually, start_platform

RAW = """
import hashlib

def main(data):
    return {"type": type(data).__name__, "sha256": hashlib.sha256(data).hexdigest()}
"""
FIELDS = """
import hashlib
from pydantic import BaseModel

class Upload(BaseModel):
    data: bytes
    note: str
    size: int

def main(inp: Upload) -> dict:
    return {"sha256": hashlib.sha256(inp.data).hexdigest(), "note": inp.note, "size": inp.size}
"""
#: every byte value, and not UTF-8
BLOB = b"\xff\xfe\x00" + bytes(range(256)) * 16


@pytest.fixture(scope="module")
def served(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """The platform with `digits` trained and two user functions, each answering once."""
    platform = start_platform(
        nats_server, Path(tmp_path_factory.mktemp("platform")), builtins="inference,retrain"
    )
    try:
        with platform.client(timeout=120) as client:
            r = client.post("/v1/catalog/publish/digits")
            assert r.status_code == 201, r.text
            r = client.post(
                "/v1/functions/retrain/invoke?timeout=120",
                json={"model": "digits", "default": True},
            )
            assert r.status_code == 200 and r.json()["promoted"], r.text
            for name, code in (("raw", RAW), ("fields", FIELDS)):
                spec = {"handler": "main", "code": code, "max_scale": 1}
                r = client.put(f"/v1/functions/{name}", json=spec)
                assert r.status_code in (200, 201), r.text
        yield platform
    finally:
        platform.stop()


@pytest.fixture
async def client(served: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=served.url, auth=served.basic_auth, timeout=120
    ) as client:
        yield client


@pytest.fixture
async def bus(served: Platform) -> AsyncIterator[Bus]:
    bus = await Bus.connect(served.nats.admin_url, name="test-binary-inputs")
    yield bus
    await bus.close()


async def _sent(
    bus: Bus, function: str, call: Callable[[], Awaitable[httpx.Response]]
) -> tuple[httpx.Response, list[Msg]]:
    """The answer to ``call`` and the invocations of ``function`` the bus carried meanwhile
    (sync requests to its workers, or queued ones)."""
    seen: list[Msg] = []

    async def got(msg: Msg) -> None:
        seen.append(msg)

    subs = [await bus.nc.subscribe(s(function), cb=got) for s in (run_subject, invoke_subject)]
    await bus.nc.flush()  # the server has the subscriptions before the call starts
    try:
        response = await call()
        await eventually(lambda: seen, timeout=10)
    finally:
        for sub in subs:
            await sub.unsubscribe()
    return response, seen


def _png_of_every_byte() -> bytes:
    """A digit PNG carrying an ancillary private chunk with every byte value (decoders skip
    it), so the image holds all 256 values and is still predicted on."""
    image = png(digits().x[6])
    chunk = b"prVt" + bytes(range(256))
    extra = struct.pack(">I", 256) + chunk + struct.pack(">I", zlib.crc32(chunk))
    end = image.rindex(b"IEND") - 4  # before the length of the closing chunk
    return image[:end] + extra + image[end:]


async def test_a_non_utf8_body_reaches_the_handler_and_the_bus_as_its_bytes(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    headers = {"content-type": "application/octet-stream"}
    warm = await client.post("/v1/functions/raw/invoke", content=b"warm", headers=headers)
    assert warm.status_code == 200, warm.text
    r, messages = await _sent(
        bus, "raw", lambda: client.post("/v1/functions/raw/invoke", content=BLOB, headers=headers)
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"type": "bytes", "sha256": hashlib.sha256(BLOB).hexdigest()}
    assert messages[0].data == BLOB  # binary mode: the CloudEvent's data is the message body
    sent = from_nats(messages[0].headers, messages[0].data)
    assert (sent.data, sent.datacontenttype) == (BLOB, "application/octet-stream")


async def test_a_form_gives_a_typed_handler_its_fields_and_the_file_as_bytes(
    client: httpx.AsyncClient,
) -> None:
    body, content_type = encode_form({"data": BLOB, "note": "every byte", "size": len(BLOB)})
    r = await client.post(
        "/v1/functions/fields/invoke", content=body, headers={"content-type": content_type}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "sha256": hashlib.sha256(BLOB).hexdigest(),
        "note": "every byte",
        "size": len(BLOB),
    }
    # a browser's or curl's form reads the same (a file part, text fields)
    r = await client.post(
        "/v1/functions/fields/invoke",
        files={"data": ("blob.bin", BLOB, "application/octet-stream")},
        data={"note": "curl -F", "size": str(len(BLOB))},
    )
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(BLOB).hexdigest()
    broken = await client.post(
        "/v1/functions/fields/invoke",
        content=body[: len(body) // 2],
        headers={"content-type": content_type},
    )
    assert broken.status_code == 422, broken.text
    assert "not a valid form" in broken.json()["detail"]


@pytest.mark.parametrize("how", ["raw", "multipart"])
async def test_a_predicted_png_crosses_the_bus_as_its_own_bytes(
    client: httpx.AsyncClient, bus: Bus, how: str
) -> None:
    image = _png_of_every_byte()
    assert set(image) == set(range(256))
    path = "/v2/models/digits/predict/"
    first = png(digits().x[1])
    warm = await client.post(path, content=first, headers={"content-type": "image/png"})
    assert warm.status_code == 200, warm.text

    def predict() -> Awaitable[httpx.Response]:
        if how == "raw":
            return client.post(path, content=image, headers={"content-type": "image/png"})
        return client.post(path, files={"data": ("six.png", image, "image/png")})

    r, messages = await _sent(bus, "inference", predict)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]["predictions"][0]["label"] == digits().y[6]
    sent = from_nats(messages[0].headers, messages[0].data)
    assert sent.data is not None and sent.datacontenttype is not None
    assert is_form(sent.datacontenttype), sent.datacontenttype
    assert image in sent.data
    assert base64.b64encode(image) not in sent.data
    fields = decode_form(sent.data, sent.datacontenttype)
    assert fields["data"] == image and fields["model"] == "digits"
