"""`/docs` and DEEPaaS's `/api` render in a real browser with the network cut off.

Headless Chromium (Debian's `chromium`, driven by Playwright through its `executable_path`)
may resolve no host but 127.0.0.1, and every request it makes off loopback is aborted and
recorded: the pages must show their operations from the gateway's own assets alone. A
screenshot of each page is kept under the test's tmp dir.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Route, sync_playwright

from eventbus.server import EmbeddedNats
from gateway.routes.docs import ASSETS
from tests.support import Platform, start_platform

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `make test` installs it as root"),
    pytest.mark.timeout(180),
]
#: no name resolves but loopback's: a page that needs the internet cannot reach it
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
def platform(nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not (ASSETS / "swagger-ui-bundle.js").is_file():
        pytest.fail("Swagger UI's assets are not installed: run `make assets`")
    served: Platform = start_platform(nats_server, Path(tmp_path_factory.mktemp("platform")))
    try:
        yield served.url
    finally:
        served.stop()


@pytest.fixture(scope="module")
def browser(platform: str) -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[OFFLINE, "--no-sandbox"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.mark.parametrize(
    ("path", "operation"),
    [("/docs", "/v1/functions"), ("/api", "/v2/models/")],
)
def test_page_renders_its_operations_offline(
    browser: Browser, platform: str, tmp_path: Path, path: str, operation: str
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    outside: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", None):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", only_loopback)
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(f"{platform}{path}")
    page.wait_for_selector(".opblock", timeout=30_000)
    operations = page.locator(".opblock-summary-path").all_inner_texts()
    shot = tmp_path / f"{path.strip('/')}.png"
    page.screenshot(path=str(shot), full_page=False)
    print(f"screenshot of {path}: {shot}")
    page.close()
    assert shot.stat().st_size > 10_000
    assert len(operations) >= 5, operations
    assert any(o.replace("\u200b", "").startswith(operation) for o in operations), operations
    assert not outside, f"{path} asked for {outside}"
    assert not failed, f"{path}: requests failed: {failed}"
