"""CloudEvents over HTTP: the HTTP protocol binding, binary and structured content modes.

Binary mode differs from NATS in one place: ``datacontenttype`` travels as the HTTP
``Content-Type`` header and never as ``ce-datacontenttype``.
"""

from __future__ import annotations

from collections.abc import Mapping

from eventbus.codec import (
    STRUCTURED_CONTENT_TYPE,
    binary_headers,
    from_binary,
    from_structured,
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
    """Decode an HTTP message in either content mode (batches are refused)."""
    core, extensions, content_type = split_headers(headers)
    if content_type is not None:
        event = from_structured(content_type, body)
        if event is not None:
            return event
    if "datacontenttype" in core:
        raise InvalidEventError(
            "HTTP binary mode carries datacontenttype as Content-Type, not ce-datacontenttype",
            attribute="datacontenttype",
        )
    return from_binary(core, extensions, body, content_type=content_type)
