"""CloudEvents over HTTP: the HTTP protocol binding, binary and structured content modes.

Binary mode differs from NATS in one place: ``datacontenttype`` travels as the HTTP
``Content-Type`` header and never as ``ce-datacontenttype``.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from eventbus.codec import (
    STRUCTURED_CONTENT_TYPE,
    binary_headers,
    from_binary,
    from_structured,
    is_json_type,
    split_headers,
    to_structured_json,
)
from eventbus.errors import InvalidEventError
from eventbus.types import CloudEvent


def to_http(event: CloudEvent, *, structured: bool = False) -> tuple[dict[str, str], bytes]:
    """Encode for an HTTP request or response: ``(headers, body)``; binary unless ``structured``."""
    if structured:
        return {"Content-Type": STRUCTURED_CONTENT_TYPE}, to_structured_json(event)
    headers = binary_headers(event, datacontenttype=False)
    ctype = event.datacontenttype
    if ctype is not None:
        # Content-Type is not percent-encoded: refuse what cannot be a header value.
        if not (ctype.isascii() and ctype.isprintable()):
            raise InvalidEventError(
                f"datacontenttype {ctype!r} cannot be an HTTP Content-Type header",
                attribute="datacontenttype",
            )
        headers["Content-Type"] = ctype
    return headers, event.data or b""


def from_http(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """Decode an HTTP message in either content mode (batches are refused); data whose
    content type says JSON must be JSON."""
    core, extensions, content_type = split_headers(headers)
    event = None if content_type is None else from_structured(content_type, body)
    if event is None:
        if "datacontenttype" in core:
            raise InvalidEventError(
                "HTTP binary mode carries datacontenttype as Content-Type, not ce-datacontenttype",
                attribute="datacontenttype",
            )
        event = from_binary(core, extensions, body, content_type=content_type)
    _check_json_data(event)
    return event


def _check_json_data(event: CloudEvent) -> None:
    """Refuse data that its datacontenttype declares JSON but that does not parse as JSON
    (relayed, it would reach every reader as opaque ``data_base64``)."""
    ctype = event.datacontenttype
    if event.data is None or ctype is None or not is_json_type(ctype):
        return
    try:
        orjson.loads(event.data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError(
            f"data is not valid JSON although its content type {ctype!r} says so: {exc}",
            attribute="data",
            content_type=ctype,
        ) from exc
