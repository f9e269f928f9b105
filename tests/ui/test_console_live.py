"""The web console (`/ui`) in headless Chromium against a real gateway process and the private LXD daemons.

One walk through the console with a write token: sign in, create a container from the form (its image copied from
the second daemon, big enough for LXD to report download percentages) and watch the progress bar advance and the
row reach `Running`, type into a shell in xterm.js and read the echo back, cancel a job from the jobs list, then a
read-only token sees its stop refused (the 403 problem shown as a message), and the write token stops and deletes
the container. Throughout: the token is in no request URL (Chrome's performance log), nothing is requested off the
gateway, the page keeps nothing in the browser's storage, and the gateway's log never holds the token. A screenshot
of each page lands in `test-artifacts/ui-*.png`.

The session's own rules (cookie flags, CSRF on writes, revocation, logout, websocket `Origin`) are checked over
plain HTTP in the second test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from selenium import webdriver
from selenium.common.exceptions import (
    ElementNotInteractableException,
    NoAlertPresentException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.locallxd.daemon import DaemonInfo, free_port, image_tarball
from app.lxd import Client, LXDError
from app.store.sessions import session_hash
from app.store.tokens import Scope, TokenStore
from app.ui.router import CONSOLE_CSP
from tests.http.test_swagger_ui_live import BROWSER_INTERNAL, PNG_MAGIC, Browser
from tests.support.cleanup import remove_instance
from tests.support.gateway import GatewayProcess, gateway_env, running_gateway, start_gateway
from tests.support.lxd_clients import unique

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
WAIT = 30

pytestmark = pytest.mark.timeout(240)


@dataclass
class Console:
    gateway: GatewayProcess
    writer: str
    reader: str
    tokens: TokenStore
    alias: str


@pytest.fixture
def padded_alias(image_server: DaemonInfo) -> Iterator[str]:
    """A 16 MB public image on the second daemon under a unique alias (a small or already local image makes LXD
    report no download percentages)."""
    alias = unique("lgwui")

    async def upload() -> str:
        path = await asyncio.to_thread(image_tarball, None, 16)
        async with Client.unix(image_server.socket_path) as remote:
            image = await remote.images.upload(path, aliases=[alias], public=True)
            return image.fingerprint  # type: ignore[union-attr]

    fingerprint = asyncio.run(upload())

    async def drop() -> None:
        async with Client.unix(image_server.socket_path) as remote:
            with contextlib.suppress(LXDError):
                await remote.images.delete(fingerprint)

    try:
        yield alias
    finally:
        asyncio.run(drop())


@pytest.fixture
def console(tmp_path: Path, lxd_daemon: DaemonInfo, image_server: DaemonInfo, padded_alias: str) -> Iterator[Console]:
    data = tmp_path / "data"
    data.mkdir()
    tokens = TokenStore(data / "tokens.json")
    writer = tokens.create("console-writer", [Scope.write])[1]
    reader = tokens.create("console-reader", [Scope.read])[1]
    sources = json.dumps([{"name": "mirror", "url": image_server.https_url, "protocol": image_server.backend,
                           "certificate": image_server.server_cert}])
    with running_gateway(lxd_daemon.socket_path, data, auth=True, LXDGW_IMAGE_SOURCES=sources,
                         LXDGW_SHUTDOWN_GRACE_SECONDS="1") as gateway:
        yield Console(gateway, writer, reader, tokens, padded_alias)


# ------------------------------------------------------------------------------------------------ page helpers


def wait_for(driver: object, condition: object, timeout: float = WAIT) -> object:
    return WebDriverWait(driver, timeout).until(condition)  # type: ignore[arg-type]


def shot(browser: Browser, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"ui-{name}.png"
    browser.driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == PNG_MAGIC


def go(browser: Browser, view: str) -> None:
    browser.driver.find_element(By.CSS_SELECTOR, f"#nav a[data-view='{view}']").click()
    wait_for(browser.driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-view") == view)


def sign_in(browser: Browser, token: str) -> None:
    d = browser.driver
    field = wait_for(d, ec.element_to_be_clickable((By.ID, "signin-token")))
    field.send_keys(token)  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    wait_for(d, ec.visibility_of_element_located((By.ID, "nav")))


def sign_out(browser: Browser) -> None:
    browser.driver.find_element(By.ID, "logout").click()
    wait_for(browser.driver, ec.visibility_of_element_located((By.ID, "signin-token")))


def row_status(browser: Browser, name: str) -> str | None:
    cell = browser.driver.execute_script(  # read at once: the live list redraws its rows
        "const c = document.querySelector(arguments[0]); return c ? c.textContent : null;",
        f"#containers tr[data-name='{name}'] td.status")
    return cell if isinstance(cell, str) else None


def click_when_there(browser: Browser, css: str) -> None:
    """Click the element once it is there; the live lists redraw their rows, so a row found a moment ago may be
    gone: look again."""

    def clicked(d: webdriver.Chrome) -> bool:
        try:
            found = d.find_elements(By.CSS_SELECTOR, css)
            if not found:
                return False
            found[0].click()
            return True
        except (StaleElementReferenceException, ElementNotInteractableException):
            return False

    wait_for(browser.driver, clicked)


def click_action(browser: Browser, name: str, action: str) -> None:
    click_when_there(browser, f"#containers tr[data-name='{name}'] button[data-action='{action}']")


def problem_shown(browser: Browser) -> tuple[str, str]:
    """The title and detail of the problem the page shows (waiting for one)."""
    box = browser.driver.find_element(By.ID, "message")
    wait_for(browser.driver, lambda _: box.is_displayed() and box.get_attribute("data-kind") == "problem")
    return box.find_element(By.CSS_SELECTOR, ".title").text, box.find_element(By.CSS_SELECTOR, ".detail").text


async def _remove(daemon: DaemonInfo, name: str, alias: str) -> None:
    """The container if it is still there, and the image the create copied in."""
    async with Client.unix(daemon.socket_path) as lxd:
        await remove_instance(lxd, name)
        with contextlib.suppress(LXDError):
            await lxd.images.delete((await lxd.images.alias(alias)).target)


# ------------------------------------------------------------------------------------------------ the walk


def test_console_signs_in_creates_types_cancels_and_deletes(console: Console, browser: Browser,
                                                            lxd_daemon: DaemonInfo) -> None:
    gw, d = console.gateway, browser.driver
    name = unique("lgwui")
    d.set_window_size(1280, 800)
    try:
        page = httpx.get(f"{gw.base}/ui", timeout=10)
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CONSOLE_CSP
        script_src = CONSOLE_CSP.split("script-src", 1)[1].split(";", 1)[0]
        assert script_src.split() == ["'self'"], CONSOLE_CSP  # no inline script, nothing from elsewhere

        d.get(f"{gw.base}/ui")
        shot(browser, "signin")
        sign_in(browser, console.writer)
        assert d.execute_script("return [localStorage.length, sessionStorage.length, document.cookie]") == [0, 0, ""]
        cookie = next(c for c in d.get_cookies() if c["name"] == "__Host-lxdgw-session")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"

        # Create from the form; the bar follows LXD's download percentages; the row reaches Running.
        go(browser, "create")
        d.find_element(By.ID, "create-name").send_keys(name)
        d.find_element(By.ID, "create-alias").send_keys(console.alias)
        wait_for(d, lambda _: len(Select(d.find_element(By.ID, "create-source")).options) > 1)
        Select(d.find_element(By.ID, "create-source")).select_by_value("mirror")
        d.find_element(By.ID, "create-submit").click()
        outcome = d.find_element(By.ID, "create-outcome")
        wait_for(d, lambda _: outcome.get_attribute("data-status"), timeout=150)
        shot(browser, "create")
        assert outcome.get_attribute("data-status") == "succeeded", outcome.text
        seen = [int(p) for p in (d.find_element(By.ID, "create-bar").get_attribute("data-seen") or "").split(",") if p]
        assert any(0 < p < 100 for p in seen) and len(set(seen)) >= 2, f"the bar did not advance: {seen}"

        go(browser, "containers")
        wait_for(d, lambda _: row_status(browser, name) == "Running")
        shot(browser, "containers")
        d.set_window_size(420, 800)  # a narrow window: the table scrolls sideways, the page does not
        assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        shot(browser, "containers-narrow")
        d.set_window_size(1280, 800)

        # A shell in xterm.js: type, read the echo back from the page.
        click_action(browser, name, "terminal")
        wait_for(d, lambda _: d.find_element(By.ID, "terminal-target").get_attribute("value") == f"local/{name}")
        d.find_element(By.ID, "terminal-connect").click()
        wait_for(d, lambda _: d.find_element(By.ID, "terminal").get_attribute("data-state") == "open")
        time.sleep(0.5)
        d.find_element(By.CSS_SELECTOR, "#terminal textarea").send_keys("echo hello-$RANDOM\n")
        rows = d.find_element(By.CSS_SELECTOR, "#terminal .xterm-rows")
        wait_for(d, lambda _: re.search(r"^hello-\d+\s*$", rows.text, re.M))
        d.set_window_size(600, 800)  # a narrow window: the terminal refits and tells the shell
        d.find_element(By.CSS_SELECTOR, "#terminal textarea").send_keys("stty size\n")
        wait_for(d, lambda _: re.search(r"^\d+ \d+\s*$", rows.text, re.M))
        shot(browser, "terminal")
        d.set_window_size(1280, 800)
        d.find_element(By.ID, "terminal-close").click()

        # A job cancelled from the jobs list.
        writer = httpx.Client(base_url=gw.base, headers={"Authorization": f"Bearer {console.writer}"}, timeout=30)
        job = writer.post(f"/v1/containers/{name}/exec", json={"command": ["sleep", "120"]}).json()
        go(browser, "jobs")
        Select(d.find_element(By.ID, "jobs-status")).select_by_visible_text("running")
        wait_for(d, ec.presence_of_element_located((By.CSS_SELECTOR, f"#jobs tr[data-id='{job['id']}']")))
        shot(browser, "jobs")
        click_when_there(browser, f"#jobs tr[data-id='{job['id']}'] button[data-action='cancel']")
        assert writer.get(f"/v1/jobs/{job['id']}", params={"wait": 30}).json()["status"] == "cancelled"
        Select(d.find_element(By.ID, "jobs-status")).select_by_visible_text("cancelled")
        click_when_there(browser, f"#jobs tr[data-id='{job['id']}'] button[data-action='details']")
        detail = d.find_element(By.ID, "job-detail")
        wait_for(d, lambda _: "container.exec cancelled" in detail.text)

        # An image copied from the image source, followed to its end; its new alias listed.
        go(browser, "images")
        copied = f"{console.alias}-copy"
        wait_for(d, lambda _: Select(d.find_element(By.ID, "copy-source")).options)
        d.find_element(By.ID, "copy-alias").send_keys(console.alias)
        d.find_element(By.ID, "copy-local").send_keys(copied)
        d.find_element(By.CSS_SELECTOR, "#copy-form button[type=submit]").click()
        copy_outcome = d.find_element(By.ID, "copy-outcome")
        wait_for(d, lambda _: copy_outcome.get_attribute("data-status"), timeout=120)
        assert copy_outcome.get_attribute("data-status") == "succeeded", copy_outcome.text
        wait_for(d, lambda _: copied in d.find_element(By.ID, "images").text)
        shot(browser, "images")

        # A read-only token: the stop is refused, the 403 shown in words.
        sign_out(browser)
        sign_in(browser, console.reader)
        go(browser, "containers")
        wait_for(d, lambda _: row_status(browser, name) == "Running")
        click_action(browser, name, "stop")
        title, detail = problem_shown(browser)
        shot(browser, "read-only")
        assert title == "Forbidden" and "write" in detail, (title, detail)
        assert row_status(browser, name) == "Running"

        # The write token stops and deletes it from the page.
        sign_out(browser)
        sign_in(browser, console.writer)
        go(browser, "containers")
        click_action(browser, name, "stop")
        wait_for(d, lambda _: row_status(browser, name) == "Stopped", timeout=60)
        click_action(browser, name, "delete")
        with contextlib.suppress(NoAlertPresentException):
            d.switch_to.alert.accept()
        wait_for(d, lambda _: row_status(browser, name) is None, timeout=60)
    finally:
        with contextlib.suppress(WebDriverException):
            shot(browser, "last")
        asyncio.run(_remove(lxd_daemon, name, console.alias))

    refused = [m["message"] for m in d.get_log("browser") if "Content Security Policy" in m["message"]]
    assert not refused, f"the page broke its own Content-Security-Policy: {refused}"
    urls = browser.drain_page_log()
    assert f"{gw.base}/ui" in urls
    assert f"{gw.base}/v1/containers?watch=true&remote=local" in urls, "the list was not watched live"
    outside = [u for u in urls if not u.startswith((f"{gw.base}/", *BROWSER_INTERNAL))]
    assert not outside, f"the console requested URLs off the gateway: {outside}"
    for secret in (console.writer, console.reader):
        assert not [u for u in urls if secret in u], "a token appeared in a request URL"
        assert secret not in gw.output(), "a token appeared in the gateway's log"


# ------------------------------------------------------------------------------------------------ the session's rules


async def _websocket_refused(url: str, origin: str) -> bool:
    """Whether the gateway refuses the websocket handshake from `origin`."""
    try:
        async with websockets.connect(url, origin=origin, open_timeout=10) as ws:  # type: ignore[arg-type]
            await asyncio.wait_for(ws.recv(), 2)
    except websockets.InvalidStatus:
        return True
    except (TimeoutError, websockets.ConnectionClosed):
        return False
    return False


def test_console_session_cookie_csrf_revocation_and_logout(console: Console) -> None:
    gw = console.gateway
    web = httpx.Client(base_url=gw.base, timeout=30)
    bad = web.post("/ui/session", json={"token": "lxdgw_not-a-token-at-all-000000000000"})
    assert bad.status_code == 401 and bad.headers["content-type"] == "application/problem+json"
    assert web.get("/ui/session").status_code == 401
    assert web.post("/ui/session", json={"token": console.writer},
                    headers={"Origin": "http://evil.example"}).status_code == 403

    signed = web.post("/ui/session", json={"token": console.writer})
    assert signed.status_code == 200, signed.text
    set_cookie = signed.headers["set-cookie"]
    session_id = signed.cookies["__Host-lxdgw-session"]
    assert console.writer not in set_cookie and session_id.startswith("lxdgws_")
    flags = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")}
    assert {"httponly", "secure", "samesite", "path", "max-age"} <= flags and "domain" not in flags, set_cookie
    assert "samesite=strict" in set_cookie.lower() and "path=/" in set_cookie.lower()
    csrf = signed.json()["csrf"]
    assert signed.json()["name"] == "console-writer" and csrf

    # httpx keeps `Secure` cookies off plain http: send it as the browser on loopback does.
    cookie = {"Cookie": f"__Host-lxdgw-session={session_id}"}
    assert web.get("/v1/whoami", headers=cookie).json()["name"] == "console-writer"
    no_csrf = web.post("/v1/tickets", headers=cookie)
    assert no_csrf.status_code == 403 and "X-CSRF-Token" in no_csrf.json()["detail"]
    assert web.post("/v1/tickets", headers={**cookie, "X-CSRF-Token": "wrong"}).status_code == 403
    ticket = web.post("/v1/tickets", headers={**cookie, "X-CSRF-Token": csrf})
    assert ticket.status_code == 201, ticket.text

    # Websockets: a ticket, and only from the gateway's own origin.
    ws_url = f"{gw.ws_base}/v1/jobs/ws?ticket={ticket.json()['ticket']}"
    assert asyncio.run(_websocket_refused(ws_url, "http://evil.example"))
    fresh = web.post("/v1/tickets", headers={**cookie, "X-CSRF-Token": csrf}).json()["ticket"]
    assert not asyncio.run(_websocket_refused(f"{gw.ws_base}/v1/jobs/ws?ticket={fresh}", gw.base))

    # The session lives in the job database by its hash only.
    with sqlite3.connect(gw.log.parent / "jobs.sqlite3") as db:
        stored = [row[0] for row in db.execute("SELECT id_hash FROM ui_sessions")]
    assert stored == [session_hash(session_id)]

    # Logout ends it (with the CSRF token only); a revoked token ends its sessions.
    assert web.delete("/ui/session", headers=cookie).status_code == 403
    assert web.delete("/ui/session", headers={**cookie, "X-CSRF-Token": csrf}).status_code == 204
    assert web.get("/v1/whoami", headers=cookie).status_code == 401
    again = web.post("/ui/session", json={"token": console.writer}).cookies["__Host-lxdgw-session"]
    again_cookie = {"Cookie": f"__Host-lxdgw-session={again}"}
    assert web.get("/ui/session", headers=again_cookie).status_code == 200
    console.tokens.revoke("console-writer")
    assert web.get("/v1/whoami", headers=again_cookie).status_code == 401
    assert web.get("/ui/session", headers=again_cookie).status_code == 401
    log = gw.output()
    assert console.writer not in log and session_id not in log and again not in log


def test_console_session_is_shared_by_replicas_on_postgresql(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                             postgres_url: str) -> None:
    """Signed in on one replica, the session works on the other; logged out on the other, it ends on both."""
    tokens_file = tmp_path / "tokens.json"
    secret = TokenStore(tokens_file).create("console-writer", [Scope.write])[1]
    started: list[GatewayProcess] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            shutil.copy(tokens_file, tmp_path / name / "tokens.json")
            env = gateway_env(lxd_daemon.socket_path, tmp_path / name, free_port(), auth=True,
                              LXDGW_DATABASE_URL=postgres_url, LXDGW_SHUTDOWN_GRACE_SECONDS="1")
            started.append(start_gateway(env, log=tmp_path / name / "gateway.log"))
        a, b = started
        signed = httpx.post(f"{a.base}/ui/session", json={"token": secret}, timeout=30)
        assert signed.status_code == 200, signed.text
        cookie = {"Cookie": f"__Host-lxdgw-session={signed.cookies['__Host-lxdgw-session']}"}
        csrf = signed.json()["csrf"]
        assert httpx.get(f"{b.base}/v1/whoami", headers=cookie, timeout=30).json()["name"] == "console-writer"
        assert httpx.get(f"{b.base}/ui/session", headers=cookie, timeout=30).json()["csrf"] == csrf
        assert httpx.delete(f"{b.base}/ui/session", headers={**cookie, "X-CSRF-Token": csrf},
                            timeout=30).status_code == 204
        assert httpx.get(f"{a.base}/v1/whoami", headers=cookie, timeout=30).status_code == 401
    finally:
        for gateway in started:
            gateway.stop()
