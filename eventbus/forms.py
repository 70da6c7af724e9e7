"""``multipart/form-data`` bodies: how an input with files crosses the bus as bytes.

In a JSON body a file can only travel as base64 (a third larger, encoded and decoded on each
side); in a form it travels as it is. The gateway sends DEEPaaS predictions this way, any
client may send a form to ``/v1/functions/{name}/invoke``, and a worker whose handler takes a
model or a mapping hands it the fields (`runtimes.worker.executor`): file parts as ``bytes``,
``application/json`` parts as their value, other parts as text.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any, Final

import orjson

from eventbus.errors import InvalidFormError

FORM_TYPE: Final = "multipart/form-data"
#: more parts than this is not an input, it is an attack on the parser
MAX_PARTS: Final = 1000
MAX_PART_HEADERS: Final = 8 << 10
_PARAM = re.compile(r';\s*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_ESCAPED = re.compile(r"\\(.)")
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{1,70}")


def is_form(content_type: str | None) -> bool:
    """Whether ``content_type`` names a ``multipart/form-data`` body."""
    return content_type is not None and content_type.split(";")[0].strip().lower() == FORM_TYPE


def encode_form(fields: Mapping[str, Any]) -> tuple[bytes, str]:
    """``(body, content type)`` of a form: bytes as file parts, str as text, anything else as
    an ``application/json`` part; a None field is left out."""
    boundary = "deepfaas-" + secrets.token_hex(16)
    out: list[bytes] = []
    for name, value in fields.items():
        if value is None:
            continue
        if '"' in name or "\r" in name or "\n" in name:
            raise InvalidFormError(f"a form field cannot be named {name!r}", field=name)
        if isinstance(value, bytes | bytearray | memoryview):
            head = (
                f'Content-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream"
            )
            data = bytes(value)
        elif isinstance(value, str):
            head = f'Content-Disposition: form-data; name="{name}"'
            data = value.encode()
        else:
            head = (
                f'Content-Disposition: form-data; name="{name}"\r\nContent-Type: application/json'
            )
            data = orjson.dumps(value)
        out.append(f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"{FORM_TYPE}; boundary={boundary}"


def decode_form(body: bytes, content_type: str) -> dict[str, Any]:
    """The fields of a form; a name given more than once becomes a list, in order.

    Raises `InvalidFormError` for anything that is not a well-formed form.
    """
    boundary = _params(content_type).get("boundary", "")
    if not _BOUNDARY.fullmatch(boundary) or boundary.endswith(" "):
        raise InvalidFormError(f"the form's boundary {boundary!r} is missing or not valid")
    delimiter = b"\r\n--" + boundary.encode()
    pieces = (b"\r\n" + body).split(delimiter)
    if len(pieces) < 2:
        raise InvalidFormError("the body has no part of the form (no boundary line)")
    if len(pieces) > MAX_PARTS + 2:
        raise InvalidFormError(f"the form has more than {MAX_PARTS} parts")
    fields: dict[str, Any] = {}
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            return fields  # the close delimiter: what follows is the epilogue
        head, sep, data = piece.partition(b"\r\n\r\n")
        if not sep or len(head) > MAX_PART_HEADERS:
            raise InvalidFormError("a part of the form has no end to its headers")
        name, value = _part(head.lstrip(b" \t").removeprefix(b"\r\n"), data)
        if name in fields:
            before = fields[name]
            fields[name] = [*before, value] if isinstance(before, list) else [before, value]
        else:
            fields[name] = value
    raise InvalidFormError("the form has no closing boundary (the body was cut short?)")


def _part(head: bytes, data: bytes) -> tuple[str, Any]:
    """One part's name and value, from its header lines and its bytes."""
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n") if head else ():
        key, colon, value = line.partition(":")
        if not colon:
            raise InvalidFormError(f"a part of the form has a bad header line {line[:80]!r}")
        headers[key.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    params = _params(disposition)
    if disposition.split(";")[0].strip().lower() != "form-data" or "name" not in params:
        raise InvalidFormError("a part of the form has no `Content-Disposition: form-data; name`")
    name = params["name"]
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return name, orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidFormError(f"form field {name!r} is not valid JSON: {exc}") from exc
    if "filename" in params or "filename*" in params or (kind and not kind.startswith("text/")):
        return name, data
    try:
        return name, data.decode()
    except UnicodeDecodeError:
        return name, data  # text that is not UTF-8 stays bytes rather than being mangled


def _params(header: str) -> dict[str, str]:
    """The ``key=value`` parameters of a header value (quoted strings unquoted)."""
    found: dict[str, str] = {}
    for key, value in _PARAM.findall(header):
        value = value.strip()
        if value.startswith('"'):
            value = value[1:-1]
            if "\\" in value:
                value = _ESCAPED.sub(r"\1", value)
        found[key.lower()] = value
    return found
