"""Path and query parameter types that every route shares: checked before a handler runs.

A value from a URL reaches KV keys, NATS subjects and integer conversions; these types refuse
what none of them can take (spaces, NUL, non-ASCII, numbers past 2^53) with a 422 problem,
and put the same constraint in the OpenAPI description, so the spec says what the server checks.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path, Query

from eventbus.namespaces import NAMESPACE_PATTERN

#: activation ids are 32 hex digits (`eventbus.types.new_id`); older or foreign ids (OpenWhisk,
#: DEEPaaS uuids) stay within the characters a KV key and a subject token allow
ACTIVATION_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_=-]{0,127}$"
#: the largest number a URL or body may give for a sequence, version or cursor: the largest
#: integer JSON keeps exact (2^53 - 1; JetStream counts to 2^64, the platform never gets near)
MAX_NUMBER: Final = 2**53 - 1

ActivationId = Annotated[
    str, Path(pattern=ACTIVATION_ID_PATTERN, max_length=128, description="activation id")
]
StreamSeq = Annotated[
    int, Path(ge=1, le=MAX_NUMBER, description="the dead letter's stream sequence")
]
FunctionFilter = Annotated[
    str | None,
    Query(pattern=NAMESPACE_PATTERN, max_length=63, description="only this function's"),
]
#: an API key's id (a uuid, as OpenWhisk's `uuid:key` credentials have)
KeyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9-]{1,64}$", description="the key's uuid")]

#: S3's bucket naming rules as `eventbus.storage.keys.validate_bucket_name` checks them
BUCKET_NAME_SCHEMA: Final = {
    "type": "string",
    "pattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    "not": {
        "anyOf": [
            {"pattern": r"\.\.|\.-|-\."},
            {"pattern": r"^\d{1,3}(\.\d{1,3}){3}$"},
            {"pattern": r"^(xn--|sthree-)|(-s3alias|--ol-s3)$"},
        ]
    },
    "description": "bucket name (S3 rules: 3-63 of a-z 0-9 . -, not like an IP address)",
}

#: a CloudEvents Subscriptions API filter as `eventbus.filters.compile_filters` checks it
#: (recursive: `all`/`any` hold filters, `not` holds one); `gateway.openapi` adds it to the
#: document's components
EVENT_FILTER_REF: Final = {"$ref": "#/components/schemas/EventFilter"}
_ATTRIBUTE: Final = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "propertyNames": {"pattern": "^[a-z0-9]{1,20}$"},
    "additionalProperties": {"type": "string"},
    "description": "one context attribute name (1-20 of a-z, 0-9) -> a string",
}
EVENT_FILTER_SCHEMA: Final = {
    "description": "one filter: exactly one dialect key",
    "oneOf": [
        *(
            {
                "type": "object",
                "required": [dialect],
                "properties": {dialect: _ATTRIBUTE},
                "additionalProperties": False,
            }
            for dialect in ("exact", "prefix", "suffix")
        ),
        *(
            {
                "type": "object",
                "required": [dialect],
                "properties": {
                    dialect: {"type": "array", "minItems": 1, "items": EVENT_FILTER_REF}
                },
                "additionalProperties": False,
            }
            for dialect in ("all", "any")
        ),
        {
            "type": "object",
            "required": ["not"],
            "properties": {"not": EVENT_FILTER_REF},
            "additionalProperties": False,
        },
    ],
}
