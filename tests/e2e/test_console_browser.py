"""The console (`/ui`) in a real browser, offline: sign in, deploy and invoke a function from
its form, follow events live, upload an image that a thumbnail trigger processes, promote and
roll back a model version, predict from a file, watch a training, replay a dead letter; a
screenshot of every page at 1280x800 and 390 px wide (under the tmp dir).

Headless Chromium (Debian's `chromium`, through Playwright's `executable_path`) resolves no
host but 127.0.0.1 and every request off loopback is aborted and recorded, as in
`test_api_pages_browser.py`. One platform and one signed-in tab serve the whole module.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, FilePayload, Page, Route, expect, sync_playwright

from eventbus.server import EmbeddedNats
from gateway.console.routes import PAGES, STATIC
from runtimes.catalog.plugins import load_model_plugin
from tests.support import Platform, start_platform, wait_activation, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `make test` installs it as root"),
    pytest.mark.timeout(240),
]
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
WAIT = 60_000  # ms: a loaded 2-core machine starts sandboxed workers slowly
SIZES = {"wide": (1280, 800), "phone": (390, 844)}
FAILING = """
def main(params):
    raise ValueError("boom: " + str(params.get("why")))
"""


@pytest.fixture(scope="module")
def platform(
    nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    if not (STATIC / "vendor" / "htmx.min.js").is_file():
        pytest.fail("the console's htmx and uPlot are not installed: run `make assets`")
    served = start_platform(
        nats_server,
        Path(tmp_path_factory.mktemp("platform")),
        builtins="thumbnail,inference,retrain",
    )
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def client(platform: Platform) -> Iterator[httpx.Client]:
    with platform.client(timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def outside() -> list[str]:
    """Requests the pages tried to make off loopback (must stay empty)."""
    return []


@pytest.fixture(scope="module")
def script_errors() -> list[str]:
    """Errors the pages' scripts raised (must stay empty)."""
    return []


@pytest.fixture(scope="module")
def page(platform: Platform, outside: list[str], script_errors: list[str]) -> Iterator[Page]:
    """One tab, signed in with the default namespace's key (kept in its session storage)."""
    with sync_playwright() as p:
        browser: Browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[OFFLINE, "--no-sandbox"]
        )
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 800})
            tab.set_default_timeout(WAIT)
            expect.set_options(timeout=WAIT)

            def only_loopback(route: Route) -> None:
                if urlsplit(route.request.url).hostname in ("127.0.0.1", None):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort("internetdisconnected")

            tab.route("**/*", only_loopback)
            tab.on("pageerror", lambda error: script_errors.append(str(error)))
            tab.goto(f"{platform.url}/ui")
            expect(tab.locator("#sign-in")).to_be_visible()
            tab.fill("#sign-in-form input[name=credential]", "not-a-key")
            tab.click("#sign-in-form button")
            expect(tab.locator("#sign-in-error")).to_contain_text("Not signed in")
            tab.fill("#sign-in-form input[name=credential]", platform.auth)
            tab.click("#sign-in-form button")
            expect(tab.locator("#whoami")).to_contain_text("default")
            yield tab
        finally:
            browser.close()


def _png() -> bytes:
    """A white stroke on black: a thumbnail's image and a digit the classifier reads."""
    image = Image.new("RGB", (120, 120), (0, 0, 0))
    ImageDraw.Draw(image).line([(60, 15), (60, 105)], fill=(255, 255, 255), width=14)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _open(page: Page, platform: Platform, name: str) -> None:
    page.goto(f"{platform.url}/ui/{name}")
    expect(page.locator("#main")).to_be_visible()
    expect(page.locator("#main")).not_to_contain_text("loading…")


def test_signed_in_pages_hold_no_secret(page: Page, platform: Platform) -> None:
    _open(page, platform, "functions")
    secret = platform.auth.partition(":")[2]
    assert secret not in page.content()
    shell = httpx.get(f"{platform.url}/ui/functions")  # anonymous: a shell, nothing more
    assert (
        shell.status_code == 200 and "script-src 'self'" in shell.headers["content-security-policy"]
    )
    assert httpx.get(f"{platform.url}/ui/x/functions").status_code == 401


def test_deploy_and_invoke_a_function_from_its_form(page: Page, platform: Platform) -> None:
    _open(page, platform, "functions")
    page.click("#new-function")
    form = page.locator("#function-form")
    form.locator("input[name=name]").fill("hello")
    schema = '{"type": "object", "properties": {"name": {"type": "string"}}}'
    form.locator("textarea[name=input_schema]").fill(schema)
    form.locator("button[type=submit]").click()
    expect(page.locator("#fn-detail h2").first).to_contain_text("hello")
    expect(page.locator("#fn-detail pre.schema")).to_contain_text('"name"')
    expect(page.locator("#functions")).to_contain_text("hello")
    example = page.locator("#invoke-form textarea[name=input]")
    expect(example).to_have_value('{\n  "name": ""\n}')  # made from the input schema
    example.fill('{"name": "console"}')
    page.click("#invoke-form button")
    expect(page.locator("#invoke-result .invoke-output")).to_contain_text("hello, console")
    # a second version from the editor, and the versions table shows both
    code = page.locator("#function-form textarea[name=code]")
    code.fill(code.input_value().replace("hello, ", "hi, "))
    page.click("#function-form button[type=submit]")
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    page.fill("#invoke-form textarea[name=input]", "{not json")
    page.click("#invoke-form button")
    expect(page.locator("#invoke-result .error")).to_contain_text("not valid JSON")

    _open(page, platform, "activations")
    row = page.locator("#activations tbody tr", has_text="hello").first
    row.locator("a").click()
    expect(page.locator("#act-detail .activation")).to_contain_text("success")
    expect(page.locator("#act-detail .activation")).to_contain_text("run")


def test_events_appear_live_with_their_filter(
    page: Page, platform: Platform, client: httpx.Client
) -> None:
    _open(page, platform, "events")
    page.fill("#event-filter input[name=type]", "org.example.console")
    page.click("#event-filter button[type=submit]")
    expect(page.locator("#event-state")).to_contain_text("Following")
    for kind in ("org.example.other", "org.example.console.ping"):
        headers = {"ce-specversion": "1.0", "ce-id": kind, "ce-source": "/test", "ce-type": kind}
        r = client.post("/v1/events", headers=headers, json={"n": 1})
        assert r.status_code in (200, 202), r.text
    expect(
        page.locator("#event-list tbody tr[data-type='org.example.console.ping']")
    ).to_be_visible()
    assert page.locator("#event-list tbody tr[data-type='org.example.other']").count() == 0
    page.click("#event-stop")
    expect(page.locator("#event-state")).to_contain_text("Stopped")


def test_an_upload_runs_the_thumbnail_trigger_beside_it(
    page: Page, platform: Platform, tmp_path: Path
) -> None:
    _open(page, platform, "triggers")
    form = page.locator("#trigger-form")
    form.locator("input[name=name]").fill("thumbs")
    form.locator("select[name=function]").select_option("thumbnail")
    form.locator("input[name=bucket]").fill("photos")
    form.locator("input[name=params]").fill('{"size": 32}')
    form.locator("input[name=output_bucket]").fill("thumbs")
    form.locator("input[name=output_key]").fill("{stem}-small.png")
    form.locator("button[type=submit]").click()
    expect(page.locator("#trigger-list tr[data-name=thumbs]")).to_contain_text("enabled")
    form.locator("input[name=name]").fill("nightly")
    form.locator("select[name=function]").select_option("thumbnail")
    form.locator("input[name=cron]").fill("0 3 * * *")
    form.locator("input[name=timezone]").fill("Europe/Madrid")
    form.locator("button[type=submit]").click()
    nightly = page.locator("#trigger-list tr[data-name=nightly]")
    expect(nightly.locator(".schedule")).to_contain_text("0 3 * * *")
    expect(nightly.locator(".next-fires li")).to_have_count(5)
    subscription = page.locator("#subscription-form")
    subscription.locator("input[name=sink]").fill("http://127.0.0.1:9/hook")
    subscription.locator("input[name=types]").fill("org.example.nothing")
    subscription.locator("button").click()
    expect(page.locator("#subscription-list")).to_contain_text("http://127.0.0.1:9/hook")

    _open(page, platform, "storage")
    page.fill("#bucket-form input[name=name]", "photos")
    page.click("#bucket-form button")
    expect(page.locator("#bucket-list")).to_contain_text("photos")
    image: FilePayload = {"name": "cat.png", "mimeType": "image/png", "buffer": _png()}
    page.set_input_files("#upload-input", files=[image])
    upload = page.locator(".upload", has_text="cat.png")
    expect(upload.locator(".state")).to_have_text("uploaded")
    expect(page.locator("#objects tr[data-key='cat.png']")).to_be_visible()
    expect(upload.locator(".caused .status")).to_have_text("success", timeout=2 * WAIT)
    expect(upload.locator(".output-key")).to_have_text("thumbs/cat-small.png")
    page.screenshot(path=str(tmp_path / "storage-upload.png"), full_page=True)
    # a folder: opened empty, it exists once a file is uploaded into it; then the file goes
    page.fill("#folder-form input[name=folder]", "raw")
    page.click("#folder-form button")
    expect(page.locator("#bucket h2")).to_contain_text("raw")
    note: FilePayload = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
    page.set_input_files("#upload-input", files=[note])
    row = page.locator("#objects tr[data-key='raw/notes.txt']")
    expect(row).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button.danger").click()
    expect(row).to_have_count(0)
    assert (
        httpx.get(
            f"{platform.url}/v1/buckets/photos/objects/raw/notes.txt", auth=platform.basic_auth
        ).status_code
        == 404
    )


def test_promote_roll_back_predict_and_train_a_model(
    page: Page, platform: Platform, client: httpx.Client, tmp_path: Path
) -> None:
    artifact = load_model_plugin("digits").train_default().artifact
    r = client.post("/v1/catalog/modules", json={"name": "digits", "description": "digits"})
    assert r.status_code == 201, r.text
    assert client.put("/v1/buckets/artifacts").status_code in (200, 201)
    assert client.put("/v1/buckets/artifacts/objects/v.bin", content=artifact).status_code == 201
    for accuracy in (0.90, 0.95):
        body = {
            "artifact": {"bucket": "artifacts", "key": "v.bin"},
            "metrics": {"accuracy": accuracy},
        }
        r = client.post("/v1/catalog/modules/digits/versions", json=body)
        assert r.status_code == 201, r.text

    _open(page, platform, "models")
    page.click("#model-list a:text('digits')")
    expect(page.locator("#model .plot canvas").first).to_be_visible()
    page.click("#model-versions tr[data-version='1'] button")
    expect(page.locator("#model .promoted-version")).to_have_text("1")
    page.click("#model-versions tr[data-version='2'] button")
    expect(page.locator("#model .promoted-version")).to_have_text("2")
    page.click("#model button:text('Roll back')")
    expect(page.locator("#model .promoted-version")).to_have_text("1")
    assert client.get("/v1/catalog/modules/digits").json()["promoted"] == 1
    image: FilePayload = {"name": "digit.png", "mimeType": "image/png", "buffer": _png()}
    page.set_input_files("#predict-form input[name=data]", files=[image])
    page.click("#predict-form button")
    expect(page.locator("#predict-result .predictions")).to_contain_text("[")
    page.click("#train")
    expect(page.locator("#trainings .training[data-status=done]")).to_contain_text(
        "done", timeout=2 * WAIT
    )
    page.screenshot(path=str(tmp_path / "model.png"), full_page=True)
    page.click("#trainings button:text('Show the new version')")
    expect(page.locator("#model-versions tr[data-version='3']")).to_be_visible()
    expect(page.locator("#model-list")).to_contain_text("3")


def test_replay_a_dead_letter(page: Page, platform: Platform, client: httpx.Client) -> None:
    spec = {"handler": "main", "code": FAILING, "max_attempts": 1}
    assert client.put("/v1/functions/failing", json=spec).status_code == 201
    r = client.post("/v1/functions/failing/invoke?async=true", json={"why": "console"})
    first = r.json()["activation_id"]
    letter: dict[str, Any] = wait_for(
        lambda: next(
            (d for d in client.get("/v1/dlq").json() if d["activation_id"] == first), None
        ),
        timeout=60,
    )
    _open(page, platform, "dlq")
    row = page.locator(f"#dlq-list tr[data-seq='{letter['seq']}']")
    expect(row).to_contain_text("boom: console")
    row.locator("button").click()
    replayed = page.locator(".replayed .activation-id")
    expect(replayed).not_to_be_empty()
    record = wait_activation(client, replayed.inner_text(), timeout=60)
    assert record["status"] == "error" and "boom: console" in record["error"]


def test_every_page_at_both_sizes(
    page: Page, platform: Platform, tmp_path: Path, outside: list[str], script_errors: list[str]
) -> None:
    shots = []
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        for name in PAGES:
            _open(page, platform, name)
            if name == "rates":
                expect(page.locator("#rate-table")).to_contain_text("hello")
            shot = tmp_path / f"{name}-{size}.png"
            page.screenshot(path=str(shot), full_page=True)
            shots.append(shot)
            overflow = page.evaluate("document.documentElement.scrollWidth")
            assert overflow <= width + 1, f"{name} is {overflow} px wide at {width} px"
    print(f"screenshots: {tmp_path}")
    assert all(s.stat().st_size > 5_000 for s in shots)
    assert not outside, f"the console asked for {outside}"
    assert not script_errors, script_errors


def test_a_second_namespace_sees_none_of_the_first(
    platform: Platform, client: httpx.Client
) -> None:
    """Every fragment renders the caller's namespace only; another's objects are 404 or 403."""
    code = "def main(params):\n    return {'secret': 42}\n"
    assert (
        client.put("/v1/functions/private", json={"handler": "main", "code": code}).status_code
        == 201
    )
    invoked = client.post("/v1/functions/private/invoke", json={})
    assert invoked.status_code == 200, invoked.text
    activation = invoked.headers["x-activation-id"]
    assert client.put("/v1/buckets/private-bucket").status_code == 201
    trigger = {"name": "private-trigger", "function": "private", "bucket": "private-bucket"}
    assert client.post("/v1/triggers", json=trigger).status_code == 201
    assert client.post("/v1/catalog/modules", json={"name": "privmodel"}).status_code == 201
    sink = {"sink": "http://127.0.0.1:9/private-sink", "types": ["org.example.private"]}
    assert client.post("/v1/subscriptions", json=sink).status_code == 201
    r = client.post("/v1/auth/keys", json={"namespace": "other"})
    assert r.status_code == 201, r.text
    since = "2026-01-01T00:00:00Z"
    with platform.client(auth=r.json()["key"]) as other:
        assert "other" in other.get("/ui/x/whoami").text
        for path, secret in [
            ("/ui/x/functions", "private"),
            ("/ui/x/activations", "private"),
            ("/ui/x/activations/filters", "private"),
            ("/ui/x/buckets", "private-bucket"),
            ("/ui/x/triggers", "private-trigger"),
            ("/ui/x/models", "privmodel"),
            ("/ui/x/rates", "private"),
            ("/ui/x/subscriptions", "private-sink"),
        ]:
            seen = other.get(path)
            assert seen.status_code == 200 and secret not in seen.text, (path, seen.text)
        for method, path in [
            ("GET", "/ui/x/functions/private"),
            ("POST", "/ui/x/functions/private/invoke"),
            ("DELETE", "/ui/x/functions/private"),
            ("GET", f"/ui/x/activations/{activation}"),
            ("GET", "/ui/x/buckets/private-bucket"),
            ("GET", "/ui/x/buckets/private-bucket/objects"),
            ("GET", f"/ui/x/buckets/private-bucket/caused?key=a.png&since={since}"),
            ("DELETE", "/ui/x/triggers/private-trigger"),
            ("GET", "/ui/x/models/privmodel"),
            ("POST", "/ui/x/models/privmodel/predict"),
            ("POST", "/ui/x/models/privmodel/train"),
            ("GET", f"/ui/x/models/privmodel/trainings/{activation}"),
            ("POST", "/ui/x/triggers/private-trigger/disable"),
        ]:
            refused = other.request(method, path)
            assert refused.status_code == 404, (method, path, refused.text)
        assert other.post("/ui/x/models/privmodel/rollback").status_code == 403
        assert other.get("/ui/x/runtimes").status_code == 403  # the operator's only
        assert other.post("/ui/x/dlq/1/replay").status_code == 404  # default's letter, if any
    assert client.get("/v1/triggers/private-trigger").status_code == 200  # nothing was deleted
    assert client.get("/v1/functions/private").status_code == 200
    anonymous = httpx.get(f"{platform.url}/ui/x/functions")
    assert anonymous.status_code == 401 and "Basic" not in anonymous.headers["www-authenticate"]
    shell = httpx.get(f"{platform.url}/ui/functions").text
    assert "private" not in shell and platform.auth.partition(":")[2] not in shell
