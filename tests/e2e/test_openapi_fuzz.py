"""The API says what it does: schemathesis against `/openapi.json` of a running platform.

Every check, a fixed seed and a fixed number of examples per operation, authenticated with the
default key: a 500, an undocumented status or media type, a response that breaks its schema,
or a 405 without `Allow` fails the test. The budget is explicit: `MAX_EXAMPLES` per operation
and phase, `REQUEST_TIMEOUT_S` per request, `BUDGET_S` for the whole run (about 2 minutes on
2 cores).

`EXCEPTIONS` turns off one check for one operation where the server enforces a rule its schema
cannot state yet; each names the rule, so the list is the to-do of the spec.
"""

from __future__ import annotations

import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventbus.server import EmbeddedNats
from tests.support import Platform, start_platform

SEED = 20261128
MAX_EXAMPLES = 10
# One thread: CPython 3.11.7's `ast` is not thread-safe, and schemathesis parses code while it
# generates ("SystemError: AST constructor recursion depth mismatch" with two, twice seen);
# `make test` already runs this file beside another on a second process.
WORKERS = 1
REQUEST_TIMEOUT_S = 20
SYNC_WAIT_S = 3
BUDGET_S = 420

#: (operation, check, why): a check off for one operation, with the rule its schema lacks
EXCEPTIONS: tuple[tuple[str, str, str], ...] = (
    ("POST /v1/functions", "positive_data_acceptance",
     "handler must be `module:function` when no code is given"),
    ("PUT /v1/functions/{name}", "positive_data_acceptance",
     "handler must be `module:function` when no code is given"),
    ("POST /v1/functions", "negative_data_rejection",
     "pydantic's lax mode takes 0 for a date-time"),
    ("PUT /v1/functions/{name}", "negative_data_rejection",
     "pydantic's lax mode takes 0 for a date-time"),
    ("POST /v1/functions/{name}/invoke", "not_a_server_error",
     "502/504 are the function's own failure or timeout (a fuzzed function's code fails)"),
    ("POST /v1/functions/{name}/invoke", "positive_data_acceptance",
     "callback must be an http(s) URL"),
    ("POST /v1/subscriptions", "positive_data_acceptance",
     "sink: an http(s) URL with a host, or nats:<subject> outside the platform's roots"),
    ("PUT /v1/subscriptions/{subscription_id}", "positive_data_acceptance",
     "sink: an http(s) URL with a host, or nats:<subject> outside the platform's roots"),
    ("POST /v1/triggers", "positive_data_acceptance",
     "function must name an existing function (422: the body refers to something missing)"),
    ("PUT /v1/triggers/{name}", "positive_data_acceptance",
     "function must name an existing function (422: the body refers to something missing)"),
    ("POST /v1/deployments", "positive_data_acceptance",
     "template: a TOSCA document with one runtime; template_path: a file it has"),
    ("POST /v1/catalog/modules", "negative_data_rejection",
     "pydantic's lax mode takes false for a number"),
    ("PUT /v1/catalog/modules/{name}", "negative_data_rejection",
     "pydantic's lax mode takes false for a number"),
    ("PUT /v1/catalog/modules/{name}", "positive_data_acceptance",
     "the body's name must equal the path's"),
    ("POST /v1/catalog/modules/{name}/versions", "positive_data_acceptance",
     "artifact.bucket follows the bucket naming rules"),
    ("GET /v1/buckets/{bucket}/objects", "positive_data_acceptance",
     "delimiter is not empty"),
    ("GET /v1/buckets/{bucket}/objects/{key}", "positive_data_acceptance",
     "object keys: no control characters, no empty, . or .. segment, 1024 bytes"),
    ("HEAD /v1/buckets/{bucket}", "content_type_conformance",
     "HEAD answers carry no body and so no Content-Type"),
    ("HEAD /v1/buckets/{bucket}/objects/{key}", "content_type_conformance",
     "HEAD of an object answers the object's own Content-Type"),
    ("POST /v1/events", "positive_data_acceptance",
     "a structured CloudEvent needs specversion, id, source, type"),
    ("POST /v2/models/{name}/predict/", "positive_data_acceptance",
     "the model's own input fields"),
    ("POST /v2/models/digits/train/", "allow_header_conformance",
     "the per-model path documents POST only; GET (the list of trainings) answers there too"),
)  # fmt: skip


#: operations left out: a stream never ends, so each case would wait out the request timeout
#: (tests/e2e/test_event_stream.py tests it)
LEFT_OUT: tuple[str, ...] = ("GET /v1/events/stream",)


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """The platform, answering a sync invoke within 3 s (202 after): a fuzzed function's
    code may hang, and no case should wait out the request timeout."""
    started = start_platform(
        nats_server, Path(tmp_path_factory.mktemp("platform")), sync_wait_s=SYNC_WAIT_S
    )
    yield started
    started.stop()


def _config() -> str:
    lines = ["[checks]", "enabled = true", ""]
    for operation in LEFT_OUT:
        lines += ["[[operations]]", f'include-name = "{operation}"', "enabled = false", ""]
    for operation, check, why in EXCEPTIONS:
        lines += [
            f"# {why}",
            "[[operations]]",
            f'include-name = "{operation}"',
            f"checks.{check}.enabled = false",
            "",
        ]
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.timeout(BUDGET_S + 60)
def test_openapi_spec_holds(platform: Platform, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config())
    command = [
        str(Path(sysconfig.get_path("scripts")) / "schemathesis"),
        "--config-file", str(config),
        "--no-color",
        "run", f"{platform.url}/openapi.json",
        "--auth", platform.auth,
        "--seed", str(SEED),
        "--max-examples", str(MAX_EXAMPLES),
        "--workers", str(WORKERS),
        "--request-timeout", str(REQUEST_TIMEOUT_S),
        "--generation-database", "none",
        "--suppress-health-check", "all",
    ]  # fmt: skip
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=BUDGET_S, check=False
    )
    report = (run.stdout + run.stderr).replace(platform.auth, "<key>")
    assert run.returncode == 0, report[-30000:]
