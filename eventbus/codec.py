"""CloudEvents on the wire: the JSON event format and the NATS protocol binding.

Binary mode: attributes as percent-encoded ``ce-`` headers, data bytes as the body; headers
carry no types (an int or bool extension comes back as ``"5"``/``"true"``) and an empty body
reads back as no data. Structured mode keeps extension types; JSON data comes back as the
same value, re-serialised compactly. Decoding failures raise only `InvalidEventError`.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, unquote_to_bytes

import orjson
from pydantic import ValidationError

from eventbus.errors import InvalidEventError
from eventbus.types import CORE_ATTRIBUTES, REQUIRED_ATTRIBUTES, CloudEvent

JSON_FORMAT: Final = "application/cloudevents+json"
STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
DEFAULT_JSON_TYPE: Final = "application/json"

# Printable ASCII less space, '"' and '%' travels as is; anything else is percent-encoded.
_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_NEEDS_ENCODING: Final = re.compile(r"[^\x21\x23\x24\x26-\x7e]")
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_QUOTED_PAIR: Final = re.compile(r"\\(.)", re.DOTALL)
_RFC3339: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")

Attributes = dict[str, Any]


def to_nats(event: CloudEvent, *, structured: bool = False) -> tuple[dict[str, str], bytes]:
    """Encode for NATS: ``(headers, body)``; binary mode unless ``structured``."""
    if structured:
        return {"Content-Type": STRUCTURED_CONTENT_TYPE}, to_structured_json(event)
    return binary_headers(event, datacontenttype=True), event.data or b""


def from_nats(headers: Mapping[str, str] | None, body: bytes) -> CloudEvent:
    """Decode a NATS message in either content mode."""
    core, extensions, content_type = split_headers(headers)
    if content_type is None:
        return from_binary(core, extensions, body)
    event = from_structured(content_type, body)
    if event is not None:
        return event
    # Senders with HTTP habits put datacontenttype in Content-Type; take it as a fallback.
    return from_binary(core, extensions, body, content_type=content_type)


def to_structured_json(event: CloudEvent) -> bytes:
    """The event in the JSON event format (``application/cloudevents+json``)."""
    doc: dict[str, Any] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    if event.subject is not None:
        doc["subject"] = event.subject
    if event.time is not None:
        doc["time"] = time_text(event.time)
    if event.datacontenttype is not None:
        doc["datacontenttype"] = event.datacontenttype
    if event.dataschema is not None:
        doc["dataschema"] = event.dataschema
    doc.update(event.extensions)
    data, ctype = event.data, event.datacontenttype
    if data is not None:
        as_text: Any = None
        if ctype is None or is_json_type(ctype):
            with contextlib.suppress(orjson.JSONDecodeError):
                orjson.loads(data)
                as_text = orjson.Fragment(data)  # valid JSON: embed the bytes verbatim
        elif _is_text_type(ctype):
            with contextlib.suppress(UnicodeDecodeError):
                as_text = data.decode("utf-8")
        if as_text is None:  # binary, or not what its content type says: keep it exact
            doc["data_base64"] = base64.b64encode(data).decode("ascii")
        else:
            doc["data"] = as_text
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError as exc:  # an integer extension beyond 64 bits
        raise InvalidEventError(f"event cannot be encoded as JSON: {exc}") from exc


def from_structured_json(body: bytes) -> CloudEvent:
    """Decode one event in the JSON event format."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError(f"structured event is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidEventError(f"structured event must be a JSON object, not {type(doc).__name__}")
    if "data" in doc and "data_base64" in doc:
        raise InvalidEventError("structured event has both 'data' and 'data_base64'")
    core: Attributes = {}
    extensions: Attributes = {}
    for name, value in doc.items():
        if value is None or name == "data" or name == "data_base64":
            continue  # a null member means the attribute is unset (JSON event format)
        if name in CORE_ATTRIBUTES:
            core[name] = value
        elif isinstance(value, str | int):  # bool is an int
            extensions[name] = value
        else:
            raise InvalidEventError(
                f"extension attribute {name!r} must be a string, integer or boolean",
                attribute=name,
            )
    ctype = core.get("datacontenttype")  # a non-string fails validation in build_event
    data: bytes | None = None
    if doc.get("data_base64") is not None:
        try:
            data = base64.b64decode(doc["data_base64"], validate=True)
        except (TypeError, ValueError) as exc:  # binascii.Error is a ValueError
            raise InvalidEventError("'data_base64' is not a base64 string") from exc
    elif "data" in doc:
        value = doc["data"]
        if ctype is None or not isinstance(ctype, str) or is_json_type(ctype):
            try:
                data = orjson.dumps(value)  # an explicit null is the JSON payload `null`
            except orjson.JSONEncodeError as exc:
                raise InvalidEventError(f"'data' cannot be re-encoded as JSON: {exc}") from exc
            # No datacontenttype means JSON: say so, for bindings that carry it separately.
            core["datacontenttype"] = ctype or DEFAULT_JSON_TYPE
        elif isinstance(value, str):
            data = value.encode("utf-8")
        elif value is not None:
            raise InvalidEventError(
                f"'data' must be a string when datacontenttype {ctype!r} is not JSON"
            )
    return build_event(core, extensions, data)


def from_structured(content_type: str, body: bytes) -> CloudEvent | None:
    """Decode a structured-mode body, or ``None`` when the content type is not CloudEvents."""
    media = content_type.split(";", 1)[0].strip().lower()
    if not media.startswith("application/cloudevents"):
        return None
    if media == JSON_FORMAT:
        return from_structured_json(body)
    if media.startswith("application/cloudevents-batch"):
        raise InvalidEventError(
            "batched content mode is not accepted here: send one event per message",
            content_type=content_type,
        )
    raise InvalidEventError(
        f"unsupported structured event format {media!r}: only {JSON_FORMAT} is supported",
        content_type=content_type,
    )


def binary_headers(event: CloudEvent, *, datacontenttype: bool) -> dict[str, str]:
    """Binary-mode ``ce-`` headers, percent-encoded; ``datacontenttype`` says if it goes too."""
    headers = {
        "ce-specversion": event.specversion,
        "ce-id": encode_value(event.id),
        "ce-source": encode_value(event.source),
        "ce-type": encode_value(event.type),
    }
    if event.subject is not None:
        headers["ce-subject"] = encode_value(event.subject)
    if event.time is not None:
        headers["ce-time"] = time_text(event.time)
    if datacontenttype and event.datacontenttype is not None:
        headers["ce-datacontenttype"] = encode_value(event.datacontenttype)
    if event.dataschema is not None:
        headers["ce-dataschema"] = encode_value(event.dataschema)
    for name, value in event.extensions.items():
        if isinstance(value, bool):
            headers["ce-" + name] = "true" if value else "false"
        elif isinstance(value, int):
            headers["ce-" + name] = str(value)
        else:
            headers["ce-" + name] = encode_value(value)
    return headers


def split_headers(
    headers: Mapping[str, str] | None,
) -> tuple[Attributes, Attributes, str | None]:
    """Raw ``ce-`` values as (core, extensions) by lower-case name, and any Content-Type."""
    core: Attributes = {}
    extensions: Attributes = {}
    content_type: str | None = None
    if headers:
        for name, value in headers.items():
            lower = name.lower()
            if lower[:3] == "ce-":
                key = lower[3:]
                target = core if key in CORE_ATTRIBUTES else extensions
                if key in target:
                    raise InvalidEventError(
                        f"header ce-{key} appears more than once", attribute=key
                    )
                target[key] = value
            elif lower == "content-type":
                content_type = value
    return core, extensions, content_type


def from_binary(
    core: Attributes, extensions: Attributes, body: bytes, *, content_type: str | None = None
) -> CloudEvent:
    """Decode raw ``ce-`` values and build the event; ``content_type`` fills a missing type."""
    # One scan decides whether any value needs trimming, unquoting or percent-decoding.
    blob = "".join(core.values()) + "".join(extensions.values())
    if "%" in blob or '"' in blob or " " in blob or "\t" in blob:
        for target in (core, extensions):
            for key, value in target.items():
                target[key] = decode_value(key, value)
    if content_type is not None and "datacontenttype" not in core:
        core["datacontenttype"] = content_type.strip(" \t")
    return build_event(core, extensions, body or None)


def build_event(core: Attributes, extensions: Attributes, data: bytes | None) -> CloudEvent:
    """Validate decoded attributes into a `CloudEvent`; ``core`` is consumed."""
    for name in REQUIRED_ATTRIBUTES:
        value = core.get(name)
        if value is None:
            raise InvalidEventError(f"missing required attribute {name!r}", attribute=name)
        if name == "specversion" and value != "1.0":
            raise InvalidEventError(
                f"unsupported specversion {value!r}: only '1.0' is accepted", attribute=name
            )
        if not value or not isinstance(value, str):
            raise InvalidEventError(
                f"attribute {name!r} must be a non-empty string", attribute=name
            )
    if "time" in core:
        core["time"] = parse_time(core["time"])
    core["data"] = data
    core["extensions"] = extensions
    try:
        return CloudEvent.model_validate(core, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in errors)
        raise InvalidEventError(f"invalid CloudEvent: {detail}", errors=errors) from exc


def encode_value(value: str) -> str:
    """Percent-encode a header value as the CloudEvents bindings require (UTF-8, upper hex)."""
    if _NEEDS_ENCODING.search(value) is None:
        return value
    return quote(value, safe=_SAFE)


def decode_value(name: str, value: str) -> str:
    """Trim, undo a quoted-string, then do one round of strict percent-decoding."""
    value = value.strip(" \t")
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
    if "%" not in value:
        return value
    bad = _BAD_PERCENT.search(value)
    if bad is not None:
        raise InvalidEventError(
            f"header ce-{name} has an invalid percent-encoding at {value[bad.start() :][:3]!r}",
            attribute=name,
        )
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeError as exc:  # a lone surrogate cannot even be encoded
        raise InvalidEventError(
            f"header ce-{name} percent-decodes to invalid UTF-8", attribute=name
        ) from exc


def parse_time(value: Any) -> datetime:
    """Parse an RFC 3339 timestamp (with a ``Z`` or numeric offset)."""
    text = value.upper() if isinstance(value, str) else ""
    if _RFC3339.fullmatch(text) is not None:
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise InvalidEventError(
        f"attribute 'time' is not an RFC 3339 timestamp: {value!r}", attribute="time"
    )


def time_text(value: datetime) -> str:
    """The RFC 3339 text of an event time, as `eventbus.types.format_time` writes it."""
    offset = value.utcoffset()
    if offset is None or offset.seconds % 60 or offset.microseconds:
        raise InvalidEventError(
            f"event time {value.isoformat()} needs a time zone offset in whole minutes",
            attribute="time",
        )
    # orjson writes the same text as format_time for these times, four times faster.
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1].decode("ascii")


def is_json_type(content_type: str) -> bool:
    """Whether a media type declares JSON (``*/json`` or ``*/*+json``), parameters ignored."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media.endswith(("/json", "+json"))


def _is_text_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media.endswith(("/xml", "+xml"))
