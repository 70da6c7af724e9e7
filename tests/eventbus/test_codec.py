"""The NATS binding and the JSON event format: round trips, percent-encoding, rejections."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from eventbus.codec import (
    STRUCTURED_CONTENT_TYPE,
    from_nats,
    from_structured_json,
    time_text,
    to_nats,
    to_structured_json,
)
from eventbus.errors import InvalidEventError
from eventbus.types import CloudEvent, format_time

T0 = datetime(2026, 11, 25, 8, 30, 5, 123456, tzinfo=UTC)


def make(**changes: Any) -> CloudEvent:
    fields: dict[str, Any] = {
        "id": "e-1",
        "source": "/storage/local",
        "type": "dev.deepfaas.storage.object.created",
        "subject": "inbox/cat.jpg",
        "time": T0,
        "datacontenttype": "application/json",
        "data": b'{"bucket":"inbox","size":1234}',
    }
    fields.update(changes)
    return CloudEvent(**fields)


VALID = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
BASE_HEADERS = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/s", "ce-type": "t.t"}


def headers_with(**changes: str | None) -> dict[str, str]:
    headers = dict(BASE_HEADERS)
    for name, value in changes.items():
        if value is None:
            headers.pop(f"ce-{name}")
        else:
            headers[f"ce-{name}"] = value
    return headers


# -- binary mode ---------------------------------------------------------------------------


def test_binary_mode_maps_every_attribute_to_a_ce_header_and_data_to_the_body() -> None:
    event = make(dataschema="https://example.org/schema", extensions={"mode": "async"})
    headers, body = to_nats(event)
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "e-1",
        "ce-source": "/storage/local",
        "ce-type": "dev.deepfaas.storage.object.created",
        "ce-subject": "inbox/cat.jpg",
        "ce-time": "2026-11-25T08:30:05.123456Z",
        "ce-datacontenttype": "application/json",
        "ce-dataschema": "https://example.org/schema",
        "ce-mode": "async",
    }
    assert body is event.data
    assert from_nats(headers, body) == event


def test_binary_headers_are_a_fresh_dict_callers_may_extend() -> None:
    event = make()
    headers, _ = to_nats(event)
    headers["Nats-Msg-Id"] = event.id
    assert "Nats-Msg-Id" not in to_nats(event)[0]
    assert from_nats(headers, event.data or b"") == event


@pytest.mark.parametrize(
    "event",
    [
        make(datacontenttype="application/octet-stream", data=bytes(range(256))),
        make(datacontenttype="text/plain; charset=utf-8", data="héllo\n".encode()),
        make(datacontenttype=None, data=None),
        make(datacontenttype="application/json", data=None, subject=None, time=None),
        make(datacontenttype="application/json", data=b'"just a string"'),
    ],
    ids=["binary", "text", "no-data", "minimal", "json-string"],
)
def test_binary_round_trip(event: CloudEvent) -> None:
    headers, body = to_nats(event)
    assert body == (event.data or b"")
    assert from_nats(headers, body) == event


def test_no_data_is_an_empty_body_and_an_empty_body_reads_as_no_data() -> None:
    headers, body = to_nats(make(data=None, datacontenttype=None))
    assert body == b"" and "ce-datacontenttype" not in headers
    assert from_nats(*to_nats(make(data=b""))).data is None  # binary mode cannot tell them apart


def test_binary_extensions_come_back_as_canonical_strings() -> None:
    event = make(extensions={"mode": "sync", "attempt": 5, "neg": -7, "yes": True, "no": False})
    headers, body = to_nats(event)
    canonical = {"mode": "sync", "attempt": "5", "neg": "-7", "yes": "true", "no": "false"}
    assert {name: headers[f"ce-{name}"] for name in canonical} == canonical
    # Headers carry no types: the spec's canonical string form is what a receiver gets.
    decoded = from_nats(headers, body)
    assert decoded.extensions == canonical
    assert decoded.model_copy(update={"extensions": event.extensions}) == event


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("plain/path-1_2.3~x?a=b&c=d", "plain/path-1_2.3~x?a=b&c=d"),
        ("a b", "a%20b"),
        ('say "hi"', "say%20%22hi%22"),
        ("100%", "100%25"),
        ("%41", "%2541"),
        ("café", "caf%C3%A9"),
        ("😀", "%F0%9F%98%80"),
        ("Euro € 😀", "Euro%20%E2%82%AC%20%F0%9F%98%80"),
        ("tab\tnl\ncr\rnul\x00", "tab%09nl%0Acr%0Dnul%00"),
        ("del\x7f c1\x85", "del%7F%20c1%C2%85"),
        ("!#$&'()*+,/:;<=>?@[\\]^`{|}~", "!#$&'()*+,/:;<=>?@[\\]^`{|}~"),
    ],
)
def test_percent_encoding_of_header_values(value: str, encoded: str) -> None:
    event = make(source=value, subject=value, extensions={"note": value})
    headers, body = to_nats(event)
    assert headers["ce-source"] == headers["ce-subject"] == headers["ce-note"] == encoded
    assert all(0x21 <= ord(c) <= 0x7E for v in headers.values() for c in v)
    decoded = from_nats(headers, body)
    assert (decoded.source, decoded.subject, decoded.extensions["note"]) == (value, value, value)


def test_decoding_accepts_lower_case_hex_and_needless_encoding_but_decodes_once() -> None:
    headers = headers_with(source="%2fa%2Fb%41", subject="%2541", id="%65-1")
    event = from_nats(headers, b"")
    assert (event.source, event.subject, event.id) == ("/a/bA", "%41", "e-1")


def test_decoding_accepts_quoted_strings_and_optional_whitespace() -> None:
    headers = headers_with(subject=' "hello \\"world\\" \\\\ 100%25" ', type="\tt.t ")
    event = from_nats(headers, b"")
    assert event.subject == 'hello "world" \\ 100%'
    assert event.type == "t.t"


def test_header_names_are_case_insensitive() -> None:
    names = ["CE-SPECVERSION", "Ce-Id", "cE-sOuRcE", "ce-TYPE", "Ce-DataContentType", "CE-MyExt"]
    headers = dict(zip(names, ["1.0", "e-1", "/s", "t.t", "text/plain", "x"], strict=True))
    headers["Nats-Msg-Id"] = "ignored"
    event = from_nats(headers, b"hi")
    assert (event.id, event.source, event.datacontenttype) == ("e-1", "/s", "text/plain")
    assert (event.data, event.extensions) == (b"hi", {"myext": "x"})


def test_the_same_header_twice_in_different_case_is_refused() -> None:
    with pytest.raises(InvalidEventError, match="ce-id appears more than once"):
        from_nats({**BASE_HEADERS, "CE-ID": "other"}, b"")


def test_a_plain_content_type_stands_in_for_a_missing_ce_datacontenttype() -> None:
    assert from_nats({**BASE_HEADERS, "Content-Type": "text/csv"}, b"a").datacontenttype == (
        "text/csv"
    )
    both = {**BASE_HEADERS, "content-type": "text/csv", "ce-datacontenttype": "text/plain"}
    assert from_nats(both, b"a").datacontenttype == "text/plain"


# -- structured mode -----------------------------------------------------------------------


def test_structured_mode_uses_the_json_event_format() -> None:
    event = make(extensions={"mode": "sync", "attempt": 5, "yes": True})
    headers, body = to_nats(event, structured=True)
    assert headers == {"Content-Type": STRUCTURED_CONTENT_TYPE}
    assert orjson.loads(body) == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/storage/local",
        "type": "dev.deepfaas.storage.object.created",
        "subject": "inbox/cat.jpg",
        "time": "2026-11-25T08:30:05.123456Z",
        "datacontenttype": "application/json",
        "mode": "sync",
        "attempt": 5,
        "yes": True,
        "data": {"bucket": "inbox", "size": 1234},
    }
    assert from_nats(headers, body) == event  # extension types survive structured mode


@pytest.mark.parametrize(
    "content_type",
    ["application/cloudevents+json", "Application/CloudEvents+JSON; charset=UTF-8"],
)
def test_structured_mode_is_recognised_case_insensitively(content_type: str) -> None:
    event = make()
    assert from_nats({"content-TYPE": content_type}, to_structured_json(event)) == event


@pytest.mark.parametrize(
    ("ctype", "data", "member", "value"),
    [
        ("application/json", b'{"a": [1, 2]}', "data", {"a": [1, 2]}),
        ("application/vnd.x+json; charset=utf-8", b"[true]", "data", [True]),
        ("text/json", b"3", "data", 3),
        ("text/plain", "héllo".encode(), "data", "héllo"),
        ("application/xml", b"<much wow='xml'/>", "data", "<much wow='xml'/>"),
        ("application/octet-stream", b"\x00\xff", "data_base64", "AP8="),
        ("text/plain", b"\xff\xfe", "data_base64", "//4="),
        ("application/json", b"{not json", "data_base64", "e25vdCBqc29u"),
        ("application/json", b"", "data_base64", ""),
        (None, b"\x89PNG", "data_base64", "iVBORw=="),
    ],
)
def test_structured_data_member_follows_the_content_type(
    ctype: str | None, data: bytes, member: str, value: object
) -> None:
    event = make(datacontenttype=ctype, data=data)
    doc = orjson.loads(to_structured_json(event))
    assert doc[member] == value
    assert ("data" in doc) != ("data_base64" in doc)
    decoded = from_structured_json(to_structured_json(event))
    assert decoded.datacontenttype == ctype
    if member == "data_base64" or not ctype or "json" not in ctype:
        assert decoded.data == data  # exact bytes
    else:
        assert orjson.loads(decoded.data or b"") == orjson.loads(data)  # same JSON value


def test_structured_json_embeds_json_bytes_verbatim_and_decodes_them_compactly() -> None:
    event = make(data=b'{"a": 1,\n "b": [1.5, "x"]}')
    assert b'"data":{"a": 1,\n "b": [1.5, "x"]}' in to_structured_json(event)
    assert from_structured_json(to_structured_json(event)).data == b'{"a":1,"b":[1.5,"x"]}'


def test_json_data_without_a_content_type_is_declared_json_on_decoding() -> None:
    event = make(datacontenttype=None, data=b'{"k":"v"}')
    doc = orjson.loads(to_structured_json(event))
    assert "datacontenttype" not in doc and doc["data"] == {"k": "v"}
    decoded = from_structured_json(to_structured_json(event))
    assert decoded.datacontenttype == "application/json"  # the JSON format implies it
    assert decoded.data == b'{"k":"v"}'


def test_structured_null_members_are_unset_but_null_json_data_is_a_payload() -> None:
    doc: dict[str, Any] = VALID | {"subject": None}
    assert from_structured_json(orjson.dumps(doc)).subject is None
    doc |= {"datacontenttype": "application/json", "data": None}
    assert from_structured_json(orjson.dumps(doc)).data == b"null"
    doc |= {"datacontenttype": "text/plain"}
    assert from_structured_json(orjson.dumps(doc)).data is None
    doc |= {"datacontenttype": "application/json", "data": "text"}
    assert from_structured_json(orjson.dumps(doc)).data == b'"text"'
    doc |= {"data": None, "data_base64": None}
    with pytest.raises(InvalidEventError, match="both 'data' and 'data_base64'"):
        from_structured_json(orjson.dumps(doc))


def test_structured_round_trip_of_special_characters() -> None:
    value = 'a b "q" 100% %41 é 😀 \t\x01'
    event = make(source=value, subject=value, extensions={"note": value})
    assert from_structured_json(to_structured_json(event)) == event


# -- time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        T0,
        T0.replace(microsecond=0),
        T0.astimezone(timezone(timedelta(hours=5, minutes=30))),
        T0.astimezone(timezone(timedelta(hours=-8))),
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_time_is_written_as_format_time_writes_it_and_round_trips(when: datetime) -> None:
    assert time_text(when) == format_time(when)
    event = make(time=when)
    for structured in (False, True):
        decoded = from_nats(*to_nats(event, structured=structured))
        assert decoded.time == when and decoded.time.utcoffset() == when.utcoffset()


def test_lower_case_rfc3339_separators_are_accepted() -> None:
    event = from_nats(headers_with(time="2026-11-25t08:30:05.5z"), b"")
    assert event.time == datetime(2026, 11, 25, 8, 30, 5, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    "when",
    [datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=timezone(timedelta(seconds=30)))],
)
def test_a_time_without_a_whole_minute_offset_cannot_be_encoded(when: datetime) -> None:
    with pytest.raises(InvalidEventError, match="time zone offset"):
        to_nats(make(time=when))


# -- rejections ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["specversion", "id", "source", "type"])
def test_binary_missing_required_attribute(name: str) -> None:
    with pytest.raises(InvalidEventError, match=f"missing required attribute '{name}'"):
        from_nats(headers_with(**{name: None}), b"")


@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_binary_empty_required_attribute(name: str) -> None:
    with pytest.raises(InvalidEventError, match=f"'{name}' must be a non-empty string"):
        from_nats(headers_with(**{name: ""}), b"")


def test_no_headers_at_all_is_not_an_event() -> None:
    empty: tuple[dict[str, str] | None, ...] = (None, {})
    for headers in empty:
        with pytest.raises(InvalidEventError, match="missing required attribute 'specversion'"):
            from_nats(headers, b'{"a":1}')


@pytest.mark.parametrize("version", ["0.3", "2.0", "1", "1.0.2"])
def test_other_specversions_are_refused(version: str) -> None:
    with pytest.raises(InvalidEventError, match="unsupported specversion"):
        from_nats(headers_with(specversion=version), b"")
    doc = VALID | {"specversion": version}
    with pytest.raises(InvalidEventError, match="unsupported specversion"):
        from_structured_json(orjson.dumps(doc))


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2026-11-25T08:30:05",
        "2026-11-25",
        "2026-13-01T00:00:00Z",
        "2026-11-25T24:00:00Z",
        "2026-11-25 08:30:05Z",
        "20261125T083005Z",
        "2026-11-25T08:30:05+0100",
    ],
)
def test_bad_times_are_refused(value: str) -> None:
    with pytest.raises(InvalidEventError, match="not an RFC 3339 timestamp"):
        from_nats(headers_with(time=value), b"")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("%G1", "invalid percent-encoding at '%G1'"),
        ("abc%4", "invalid percent-encoding at '%4'"),
        ("abc%", "invalid percent-encoding at '%'"),
        ("%C0%A0", "invalid UTF-8"),  # overlong encoding of a space
        ("caf%E9", "invalid UTF-8"),  # Latin-1, not UTF-8
        ("%ED%A0%80", "invalid UTF-8"),  # an encoded surrogate
    ],
)
def test_bad_percent_encoding_is_refused(value: str, problem: str) -> None:
    with pytest.raises(InvalidEventError, match=problem) as caught:
        from_nats(headers_with(subject=value), b"")
    assert caught.value.fields["attribute"] == "subject"


@pytest.mark.parametrize(
    "name", ["foo_bar", "foo-bar", "x" * 21, "", "data", "ünï".encode().decode("latin-1")]
)
def test_invalid_extension_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidEventError, match="extension attribute name"):
        from_nats({**BASE_HEADERS, f"ce-{name}": "v"}, b"")


@pytest.mark.parametrize("name", ["Foo", "foo_bar", "x" * 21, "über", "foo\n"])
def test_invalid_extension_names_are_refused_in_structured_mode(name: str) -> None:
    doc = VALID | {name: "v"}
    with pytest.raises(InvalidEventError, match="extension attribute name"):
        from_structured_json(orjson.dumps(doc))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "must be a JSON object, not list"),
        (b'"event"', "must be a JSON object, not str"),
        (b"null", "must be a JSON object, not NoneType"),
        (orjson.dumps(VALID | {"data": 1, "data_base64": "AA=="}), "both 'data' and"),
        (orjson.dumps(VALID | {"data_base64": "!!!"}), "not a base64 string"),
        (orjson.dumps(VALID | {"data_base64": "é"}), "not a base64 string"),
        (orjson.dumps(VALID | {"data_base64": 12}), "not a base64 string"),
        (orjson.dumps(VALID | {"ext": 1.5}), "'ext' must be a string, integer or boolean"),
        (orjson.dumps(VALID | {"ext": [1]}), "'ext' must be a string, integer or boolean"),
        (orjson.dumps(VALID | {"id": 5}), "'id' must be a non-empty string"),
        (orjson.dumps(VALID | {"specversion": 1.0}), "unsupported specversion 1.0"),
        (orjson.dumps(VALID | {"subject": 5}), "subject: Input should be a valid string"),
        (orjson.dumps(VALID | {"time": 1700000000}), "not an RFC 3339 timestamp"),
        (
            orjson.dumps(VALID | {"datacontenttype": 7}),
            "datacontenttype: Input should be a valid string",
        ),
        (
            orjson.dumps(VALID | {"datacontenttype": "text/plain", "data": {"a": 1}}),
            "'data' must be a string when datacontenttype 'text/plain' is not JSON",
        ),
        (
            orjson.dumps(VALID | {"data": [[[]]]}).replace(b"[[[]]]", b"[" * 300 + b"]" * 300),
            "cannot be re-encoded as JSON",
        ),
    ],
)
def test_bad_structured_events_are_refused(body: bytes, problem: str) -> None:
    with pytest.raises(InvalidEventError, match=problem):
        from_nats({"Content-Type": "application/cloudevents+json"}, body)


@pytest.mark.parametrize("name", ["specversion", "id", "source", "type"])
def test_structured_missing_required_attribute(name: str) -> None:
    doc = {k: v for k, v in VALID.items() if k != name}
    with pytest.raises(InvalidEventError, match=f"missing required attribute '{name}'"):
        from_structured_json(orjson.dumps(doc))


@pytest.mark.parametrize(
    ("content_type", "problem"),
    [
        ("application/cloudevents-batch+json", "batched content mode is not accepted"),
        ("application/cloudevents+avro", "unsupported structured event format"),
        ("application/cloudevents", "unsupported structured event format"),
    ],
)
def test_other_structured_formats_are_refused(content_type: str, problem: str) -> None:
    with pytest.raises(InvalidEventError, match=problem):
        from_nats({"Content-Type": content_type}, orjson.dumps(VALID))


def test_an_extension_integer_beyond_64_bits_cannot_be_structured() -> None:
    event = make(extensions={"big": 2**70})
    assert from_nats(*to_nats(event)).extensions == {"big": str(2**70)}
    with pytest.raises(InvalidEventError, match="cannot be encoded as JSON"):
        to_structured_json(event)


def test_garbage_only_ever_raises_invalid_event_error() -> None:
    rng = random.Random(20261125)
    alphabet = ["%", '"', "\\", " ", "\t", "A", "é", "\ud800", "\x00", "4", "f", "G", "-", ":"]
    names = ["specversion", "id", "source", "type", "time", "subject", "x", "A_B", "data"]
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(400):
        headers = dict(BASE_HEADERS)
        for _ in range(rng.randint(1, 4)):
            value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
            headers["ce-" + rng.choice(names)] = value
        if rng.random() < 0.3:
            headers["Content-Type"] = "application/cloudevents+json"
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.3:
            body = b'{"specversion":"1.0","id":"1","source":"/","type":"t","data_base64":"' + (
                base64.b64encode(body)[: rng.randint(0, 8)] + b'"}'
            )
        try:
            from_nats(headers, body)
            outcomes["decoded"] += 1
        except InvalidEventError:
            outcomes["refused"] += 1
    assert min(outcomes.values()) > 20, outcomes


# -- over a real NATS server ---------------------------------------------------------------


async def test_binary_and_structured_events_cross_a_real_nats_server(nc: Any) -> None:
    event = make(
        source="/a b/é",
        subject='x "y" 100% %41 😀',
        extensions={"mode": "async", "attempt": 2},
        data=b"\x00\x01binary",
        datacontenttype="application/octet-stream",
    )
    sub = await nc.subscribe("codec.test")
    for structured in (False, True):
        headers, body = to_nats(event, structured=structured)
        await nc.publish("codec.test", body, headers=headers)
        msg = await sub.next_msg(timeout=2)
        decoded = from_nats(msg.headers, msg.data)
        assert decoded.model_copy(update={"extensions": event.extensions}) == event
        assert decoded.extensions["attempt"] == ("2" if not structured else 2)
    await sub.unsubscribe()
