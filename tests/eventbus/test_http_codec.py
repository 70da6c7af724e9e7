"""The HTTP binding: both content modes, Content-Type as datacontenttype, interop, rejections."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from starlette.datastructures import Headers

from eventbus.codec import STRUCTURED_CONTENT_TYPE
from eventbus.errors import InvalidEventError
from eventbus.http_codec import from_http, to_http
from eventbus.types import CloudEvent

T0 = datetime(2026, 11, 25, 8, 30, 5, tzinfo=UTC)
BASE = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/s", "ce-type": "t.t"}


def make(**changes: Any) -> CloudEvent:
    fields: dict[str, Any] = {
        "id": "e-1",
        "source": "/gateway",
        "type": "dev.deepfaas.catalog.model.published",
        "subject": "models/resnet",
        "time": T0,
        "datacontenttype": "application/json",
        "data": b'{"model":"resnet","version":3}',
    }
    fields.update(changes)
    return CloudEvent(**fields)


def test_binary_mode_puts_datacontenttype_in_content_type_only() -> None:
    event = make(extensions={"mode": "async"})
    headers, body = to_http(event)
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "e-1",
        "ce-source": "/gateway",
        "ce-type": "dev.deepfaas.catalog.model.published",
        "ce-subject": "models/resnet",
        "ce-time": "2026-11-25T08:30:05Z",
        "ce-mode": "async",
        "Content-Type": "application/json",
    }
    assert body == event.data
    assert from_http(headers, body) == event


@pytest.mark.parametrize(
    "event",
    [
        make(datacontenttype="application/octet-stream", data=bytes(range(256))),
        make(datacontenttype="application/json; charset=utf-8"),
        make(datacontenttype=None, data=None),
        make(data=None, subject=None, time=None),
        make(source='/a b "c" 100% %41 é 😀 \x01', subject="tab\there"),
    ],
    ids=["binary", "content-type-parameters", "no-data", "minimal", "special-characters"],
)
@pytest.mark.parametrize("structured", [False, True], ids=["binary-mode", "structured-mode"])
def test_round_trip(event: CloudEvent, structured: bool) -> None:
    headers, body = to_http(event, structured=structured)
    assert all(0x20 <= ord(c) <= 0x7E for v in headers.values() for c in v)
    assert from_http(headers, body) == event


def test_no_data_means_no_content_type_in_binary_mode() -> None:
    headers, body = to_http(make(datacontenttype=None, data=None))
    assert body == b"" and not any(k.lower() == "content-type" for k in headers)


def test_structured_mode_body_is_the_json_event_format() -> None:
    event = make(extensions={"attempt": 3, "retry": False})
    headers, body = to_http(event, structured=True)
    assert headers == {"Content-Type": STRUCTURED_CONTENT_TYPE}
    doc = orjson.loads(body)
    assert doc["data"] == {"model": "resnet", "version": 3}
    assert (doc["attempt"], doc["retry"]) == (3, False)
    assert from_http(headers, body).extensions == {"attempt": 3, "retry": False}


def test_binary_extensions_come_back_as_strings() -> None:
    event = make(extensions={"attempt": 3, "retry": False, "note": "a b"})
    headers, body = to_http(event)
    assert (headers["ce-attempt"], headers["ce-retry"], headers["ce-note"]) == (
        "3",
        "false",
        "a%20b",
    )
    assert from_http(headers, body).extensions == {"attempt": "3", "retry": "false", "note": "a b"}


def test_percent_encoding_keeps_a_literal_percent_sequence() -> None:
    headers, body = to_http(make(subject="%41 é"))
    assert headers["ce-subject"] == "%2541%20%C3%A9"
    assert from_http(headers, body).subject == "%41 é"


def test_header_names_are_case_insensitive_and_starlette_headers_work() -> None:
    raw = [
        (b"ce-specversion", b"1.0"),
        (b"CE-ID", b"e-1"),
        (b"Ce-Source", b"/a%20b"),
        (b"ce-TYPE", b"t.t"),
        (b"CONTENT-TYPE", b"text/plain; charset=utf-8"),
        (b"host", b"example.org"),
    ]
    event = from_http(Headers(raw=raw), b"hello")
    assert (event.id, event.source, event.datacontenttype, event.data) == (
        "e-1",
        "/a b",
        "text/plain; charset=utf-8",
        b"hello",
    )
    with pytest.raises(InvalidEventError, match="ce-id appears more than once"):
        from_http(Headers(raw=[*raw, (b"ce-id", b"e-2")]), b"")


def test_structured_content_type_is_matched_case_insensitively() -> None:
    _, body = to_http(make(), structured=True)
    assert from_http({"content-type": "Application/CloudEvents+JSON;Charset=UTF-8"}, body) == make()


def test_ce_datacontenttype_is_refused_in_http_binary_mode() -> None:
    with pytest.raises(InvalidEventError, match="not ce-datacontenttype"):
        from_http({**BASE, "ce-datacontenttype": "application/json"}, b"{}")


@pytest.mark.parametrize("ctype", ["text/plain\r\nx-injected: 1", "text/plain; name=é"])
def test_a_content_type_that_cannot_be_a_header_is_refused(ctype: str) -> None:
    with pytest.raises(InvalidEventError, match="cannot be an HTTP Content-Type header"):
        to_http(make(datacontenttype=ctype))
    assert from_http(*to_http(make(datacontenttype=ctype), structured=True)).datacontenttype == (
        ctype
    )


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        ({k: v for k, v in BASE.items() if k != "ce-specversion"}, b"", "'specversion'"),
        ({k: v for k, v in BASE.items() if k != "ce-id"}, b"", "'id'"),
        ({k: v for k, v in BASE.items() if k != "ce-source"}, b"", "'source'"),
        ({k: v for k, v in BASE.items() if k != "ce-type"}, b"", "'type'"),
        ({"Content-Type": "application/json"}, b"{}", "missing required attribute"),
        (BASE | {"ce-specversion": "0.3"}, b"", "unsupported specversion '0.3'"),
        (BASE | {"ce-specversion": "2.0"}, b"", "unsupported specversion '2.0'"),
        (BASE | {"ce-time": "2026-11-25T08:30:05"}, b"", "not an RFC 3339 timestamp"),
        (BASE | {"ce-subject": "%G1"}, b"", "invalid percent-encoding"),
        (BASE | {"ce-subject": "x%4"}, b"", "invalid percent-encoding"),
        (BASE | {"ce-subject": "%C0%A0"}, b"", "invalid UTF-8"),
        (BASE | {"ce-foo_bar": "1"}, b"", "extension attribute name"),
        (BASE | {"ce-waytoolongforanextension": "1"}, b"", "extension attribute name"),
        ({"Content-Type": "application/cloudevents+json"}, b"{oops", "not valid JSON"),
        ({"Content-Type": "application/cloudevents+json"}, b"[1]", "must be a JSON object"),
        (
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion":"1.0","id":"1","source":"/","type":"t","data":1,"data_base64":""}',
            "both 'data' and 'data_base64'",
        ),
        ({"Content-Type": "application/cloudevents-batch+json"}, b"[]", "batched content mode"),
        ({"Content-Type": "application/cloudevents+xml"}, b"<e/>", "unsupported structured"),
    ],
)
def test_invalid_messages_are_refused(headers: dict[str, str], body: bytes, problem: str) -> None:
    with pytest.raises(InvalidEventError, match=problem):
        from_http(headers, body)


# -- interoperability with the CloudEvents Python SDK (cloudevents 2.2) --------------------


def sdk_event() -> SdkEvent:
    return SdkEvent(
        attributes={
            "type": "t.t",
            "source": "/a b/é",
            "id": "x-1",
            "subject": 'say "hi" 100% 😀',
            "time": T0,
            "datacontenttype": "application/json",
            "mode": "async",
        },
        data={"a": 1},
    )


@pytest.mark.parametrize("structured", [False, True], ids=["binary-mode", "structured-mode"])
def test_events_from_the_sdk_decode(structured: bool) -> None:
    encode = sdk_http.to_structured if structured else sdk_http.to_binary
    message = encode(sdk_event(), JSONFormat())
    event = from_http(message.headers, message.body)
    assert (event.id, event.source, event.subject, event.time) == (
        "x-1",
        "/a b/é",
        'say "hi" 100% 😀',
        T0,
    )
    assert event.extensions == {"mode": "async"}
    assert (event.datacontenttype, event.json_data()) == ("application/json", {"a": 1})


@pytest.mark.parametrize("structured", [False, True], ids=["binary-mode", "structured-mode"])
def test_our_events_decode_in_the_sdk(structured: bool) -> None:
    event = make(source="/a b/é", subject='say "hi" 100% 😀', extensions={"mode": "async"})
    headers, body = to_http(event, structured=structured)
    decoded = sdk_http.from_http(sdk_http.HTTPMessage(headers=headers, body=body), JSONFormat())
    attributes = decoded.get_attributes()
    assert (attributes["source"], attributes["subject"], attributes["mode"]) == (
        "/a b/é",
        'say "hi" 100% 😀',
        "async",
    )
    assert attributes["time"] == T0
    assert decoded.get_data() == {"model": "resnet", "version": 3}


# -- data that its content type declares JSON must be JSON -----------------------------------


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (BASE | {"Content-Type": "application/json"}, b"{not json"),
        (BASE | {"Content-Type": "application/json; charset=utf-8"}, b"\xff\xfe"),
        (BASE | {"Content-Type": "application/vnd.api+json"}, b"{'single': 'quotes'}"),
        (
            {"Content-Type": "application/cloudevents+json"},
            b'{"specversion":"1.0","id":"1","source":"/","type":"t",'
            b'"datacontenttype":"application/json","data_base64":"e25vdCBqc29u"}',
        ),
    ],
    ids=["binary", "binary-not-utf8", "binary-json-suffix", "structured-data-base64"],
)
def test_data_declared_json_that_is_not_json_is_refused(
    headers: dict[str, str], body: bytes
) -> None:
    with pytest.raises(InvalidEventError, match="data is not valid JSON") as caught:
        from_http(headers, body)
    assert caught.value.code == "invalid_event"  # the gateway answers 400


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (BASE | {"Content-Type": "text/plain"}, b"{not json"),
        (BASE | {"Content-Type": "application/octet-stream"}, b"\xff\xfe"),
        (BASE | {"Content-Type": "application/json"}, b""),
        (BASE | {"Content-Type": "application/json"}, b' "a string" '),
    ],
    ids=["text", "bytes", "no-data", "json-string"],
)
def test_other_data_passes_as_it_is(headers: dict[str, str], body: bytes) -> None:
    assert from_http(headers, body).data == (body or None)


@pytest.mark.parametrize("structured", [False, True], ids=["binary-mode", "structured-mode"])
def test_sdk_bytes_declared_json_that_are_not_json_are_refused(structured: bool) -> None:
    attributes = {"type": "t.t", "source": "/s", "id": "x-2", "datacontenttype": "application/json"}
    encode = sdk_http.to_structured_event if structured else sdk_http.to_binary_event
    message = encode(SdkEvent(attributes=attributes, data=b"{oops"))
    with pytest.raises(InvalidEventError, match="data is not valid JSON"):
        from_http(message.headers, message.body)
