"""Previews in a real browser: headless Chromium shows thumbnails through signed URLs,
and a front end on another origin uses the API through CORS and SSE tickets.

A real `engines serve` holds a PNG, a JPEG with an EXIF rotation and a WebP.
An HTML page (a file:// page, as a front end on another origin would be)
shows them in <img> tags through signed thumbnail URLs, which carry no
headers. Chromium must load every image at the expected natural size, the
JPEG upright, and show an expired or altered URL as a broken image.

The browser is Debian's `chromium` + `chromium-driver`, driven by selenium
through /usr/bin/chromedriver (never a downloaded driver). `make test`
installs them with apt when missing; outside CI the test skips without them.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import http.server
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import SIGNING_KEY, _unavailable, new_canvas
from engines.auth.tokens import issue_token
from engines.canvas_artifacts import signed
from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.tests.images import png, rotated_jpeg, webp
from engines.canvas_artifacts.variants.query import VariantQuery
from engines.config import Settings
from tests._http import serving
from tests._server import Server, running_server

pytestmark = pytest.mark.slow

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
URL_KEY = "browser-test-url-key-" + "u" * 32


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMEDRIVER.exists() and CHROMIUM.exists()):
        _unavailable("headless Chromium is not installed: run `make test` as root (it runs "
                     "apt-get install -y chromium chromium-driver) or install them yourself")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _serve(tmp_path: Path, **extra: str) -> contextlib.AbstractContextManager[Server]:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'engines.db'}",
           "MEDIA_LOCAL_ROOT": str(tmp_path / "media"), "AUTH_JWT_SIGNING": SIGNING_KEY,
           "URL_SIGNING_KEY": URL_KEY, "RAW_BUCKET": "", "ALLOWED_HOSTS": "127.0.0.1",
           **extra}
    return running_server(env, tmp_path)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with _serve(tmp_path) as srv:
        yield srv


def _headers() -> dict[str, str]:
    token = issue_token(Settings(auth_jwt_signing=SIGNING_KEY), sub="u_browser",
                        tenants=["t_acme"], role="member")
    return {"Authorization": f"Bearer {token}", "X-Tenant-Id": "t_acme", "X-Env": "dev",
            "X-Project-Id": "p_main"}


def _create(client: httpx.Client, canvas: str, body: bytes, mime: str) -> dict[str, Any]:
    response = client.post(f"/canvas/{canvas}/artifacts/preview?rev=1", content=body,
                           headers={"Content-Type": mime})
    assert response.status_code == 201, response.text
    return response.json()


def _sign(client: httpx.Client, record: dict[str, Any], **body: Any) -> str:
    response = client.post(f"/canvas/{record['canvas_id']}/artifacts/{record['id']}/signed-url",
                           json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["url"])


LOAD_ALL = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
Promise.all(images.map(img => img.complete ? null :
    new Promise(resolve => { img.onload = resolve; img.onerror = resolve; })))
  .then(() => done(images.map(img => ({id: img.id, complete: img.complete,
                                       width: img.naturalWidth, height: img.naturalHeight}))));
"""


def test_thumbnails_through_signed_urls_in_headless_chromium(server, browser, tmp_path):
    canvas = new_canvas()
    with httpx.Client(base_url=server.url, headers=_headers(), timeout=30) as client:
        board = _create(client, canvas, png(600, 300), "image/png")
        photo = _create(client, canvas, rotated_jpeg(400, 200), "image/jpeg")
        sticker = _create(client, canvas, webp(512, 512), "image/webp")
        odd = _create(client, canvas, png(300, 200), "image/png")
        expected = {
            "png-256": (_sign(client, board, w=256), (256, 128)),
            "png-webp-h64": (_sign(client, board, h=64, format="webp"), (128, 64)),
            "jpeg-upright": (_sign(client, photo, w=128), (128, 256)),
            "webp-auto-64": (_sign(client, sticker, w=64, format="auto"), (64, 64)),
            "png-full": (_sign(client, board, ttl_seconds=60), (600, 300)),
            "png-odd-aspect-128": (_sign(client, odd, w=128), (128, 85)),
        }
    model = ArtifactRecord.model_validate(board)
    expired = signed.signed_url(Settings(url_signing_key=URL_KEY), server.url, model,
                                VariantQuery(w=256), int(time.time()) - 1)
    altered = expected["png-256"][0].replace("w=256", "w=512")
    broken = {"expired": expired, "altered": altered}

    tags = [f'<img id="{name}" src="{html.escape(src)}" alt="{name}">'
            for name, src in [*((n, u) for n, (u, _) in expected.items()), *broken.items()]]
    page = tmp_path / "board.html"
    page.write_text("<!doctype html><html><body>" + "".join(tags) + "</body></html>")
    browser.get(page.as_uri())
    loaded = {img["id"]: img for img in browser.execute_async_script(LOAD_ALL)}

    for name, (_src, (width, height)) in expected.items():
        img = loaded[name]
        assert img["complete"], name
        assert (img["width"], img["height"]) == (width, height), (name, img)
    for name in broken:
        assert loaded[name]["complete"], name
        assert loaded[name]["width"] == 0, (name, loaded[name])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """The page server's access log would only clutter the test output."""


@contextlib.contextmanager
def page_server(directory: Path) -> Iterator[str]:
    """A second loopback HTTP server: the front end's own origin."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    with serving(handler) as url:
        yield url


FRONT_END = """<!doctype html><html><body><img id="shown" alt="preview"><script>
const API = %(api)s, HEADERS = %(headers)s, CANVAS = %(canvas)s, PNG = %(png)s;
window.log = [];
const note = entry => window.log.push({...entry, at: Date.now()});
async function createAndShow() {
  const body = Uint8Array.from(atob(PNG), c => c.charCodeAt(0));
  const created = await fetch(`${API}/canvas/${CANVAS}/artifacts/preview?rev=1`, {
    method: "POST", body, headers: {...HEADERS, "Content-Type": "image/png",
    "Idempotency-Key": "browser-1", "X-Request-Id": "req_browser_1", "X-Workspace-Id": "w_1",
    "X-Surface-Id": "s_1", "X-App-Id": "a_1", "X-Correlation-Id": "corr_1"}});
  const record = await created.json();
  const content = await fetch(`${API}/canvas/${CANVAS}/artifacts/${record.id}/content`,
                              {headers: HEADERS});
  const img = document.getElementById("shown");
  const blob = await content.blob();
  await new Promise((resolve, reject) => {
    img.onload = resolve; img.onerror = reject; img.src = URL.createObjectURL(blob); });
  return {status: created.status, id: record.id, requestId: created.headers.get("X-Request-Id"),
          contentStatus: content.status, etag: content.headers.get("ETag"),
          width: img.naturalWidth, height: img.naturalHeight};
}
async function openStream() {
  const issued = await fetch(`${API}/events/tickets`, {method: "POST",
    headers: {...HEADERS, "Content-Type": "application/json"},
    body: JSON.stringify({canvas_id: CANVAS, ttl_seconds: 300})});
  const ticket = await issued.json();
  const source = new EventSource(API + ticket.url);
  source.onopen = () => note({type: "open"});
  source.onerror = () => note({type: "error", state: source.readyState});
  source.addEventListener("artifact_written", e => note({type: "artifact_written",
    id: e.lastEventId, artifact: JSON.parse(e.data).data.artifact_id}));
  await new Promise(resolve => {
    const check = () => window.log.some(e => e.type === "open") ? resolve()
                                                                : setTimeout(check, 20);
    check(); });
  return {status: issued.status, url: ticket.url};
}
</script></body></html>"""

RUN = """const done = arguments[arguments.length - 1];
%s().then(done, error => done({error: String(error)}));"""


def _wait_for(browser: Any, found: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The page's event log once `found(log)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        log = browser.execute_script("return window.log")
        if found(log):
            return log
        assert time.monotonic() < deadline, log
        time.sleep(0.05)


def test_a_front_end_on_another_origin_creates_shows_and_follows_previews(
        browser, tmp_path):
    """CORS_ORIGINS lets the page fetch() a create and the content (an <img> shows it);
    an EventSource opened with an SSE ticket gets the event, and after the server ends
    the stream (EVENTS_STREAM_MAX_SECONDS) it reconnects by itself with Last-Event-ID and
    gets the event committed while it was away."""
    canvas = new_canvas()
    site = tmp_path / "site"
    site.mkdir()
    with page_server(site) as origin, \
            _serve(tmp_path, CORS_ORIGINS=origin, EVENTS_STREAM_MAX_SECONDS="2") as api:
        page = FRONT_END % {"api": json.dumps(api.url), "headers": json.dumps(_headers()),
                            "canvas": json.dumps(canvas),
                            "png": json.dumps(base64.b64encode(png(320, 200)).decode())}
        (site / "index.html").write_text(page)
        browser.get(f"{origin}/index.html")

        stream = browser.execute_async_script(RUN % "openStream")
        assert stream == {"status": 200, "url": stream["url"]}, stream
        shown = browser.execute_async_script(RUN % "createAndShow")
        assert shown.get("error") is None, shown
        assert (shown["status"], shown["contentStatus"]) == (201, 200)
        assert (shown["width"], shown["height"]) == (320, 200)
        assert shown["requestId"] == "req_browser_1" and shown["etag"], shown

        first = _wait_for(browser, lambda log: any(
            e["type"] == "artifact_written" for e in log))
        [written] = [e for e in first if e["type"] == "artifact_written"]
        assert written["artifact"] == shown["id"]
        _wait_for(browser, lambda log: any(e["type"] == "error" for e in log))
        with httpx.Client(base_url=api.url, headers=_headers(), timeout=30) as client:
            later = _create(client, canvas, png(64, 64), "image/png")
        committed_at = time.time() * 1000
        log = _wait_for(browser, lambda log: any(
            e["type"] == "artifact_written" and e["artifact"] == later["id"] for e in log))

    events = [e for e in log if e["type"] == "artifact_written"]
    assert [e["artifact"] for e in events] == [shown["id"], later["id"]], "once each, in order"
    assert int(events[1]["id"]) == int(events[0]["id"]) + 1
    opens = [e["at"] for e in log if e["type"] == "open"]
    assert len(opens) >= 2 and opens[1] > committed_at, \
        "the event was committed before the reconnect: only Last-Event-ID brings it"
