"""The documentation page in a real browser: headless Chromium opens `/docs` on a running gateway, authorises with
a bearer token, runs `GET /v1/containers` with "Try it out" and reads the response from the page. A screenshot of
the page with the response is kept in `test-artifacts/swagger-ui.png`.

No request may leave the machine:
- every URL the browser requested (Chrome's performance log, `Network.requestWillBeSent`) is on the gateway's
  loopback origin, or served inside the browser (`data:`, `blob:`, the `chrome://` pages of its start tab);
- every TCP connection Chromium opened, and every UDP datagram it sent, went to a loopback address (Chromium's
  own network log, `--log-net-log`, read after the browser has exited);
- Chromium resolves no host name but 127.0.0.1 (`--host-resolver-rules`), and its proxy is a trap on loopback
  that answers nothing: Chromium's own services that still try to go out despite the flags (the component
  updater, the account list, the default search engine's start page) land there and go no further.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from swagger_ui_bundle import swagger_ui_path

from app.locallxd.daemon import DaemonInfo, ensure_binary, free_port
from app.store.tokens import Scope, TokenStore

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "swagger-ui.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

METHOD = "get"
PATH = "/v1/containers"
WAIT = 30  # seconds, for each step in the page

# Schemes served inside the browser, never from the network: the page's data:/blob: URLs, and the resources of
# Chromium's own start tab (chrome://new-tab-page-third-party, chrome://resources) before the first navigation.
# Chromium's own pages (the new-tab page asks chrome-untrusted:// for its parts): no network traffic.
BROWSER_INTERNAL = ("data:", "blob:", "chrome://", "chrome-untrusted://", "about:")

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--metrics-recording-only",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--window-size=1280,1700",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--disable-breakpad", "--disable-crash-reporter",
    "--disable-search-engine-choice-screen", "--password-store=basic", "--use-mock-keychain", "--disable-translate",
    "--disable-component-extensions-with-background-pages", "--no-pings", "--dns-prefetch-disable",
    "--disable-features=Translate,MediaRouter,OptimizationHints,OptimizationGuideModelDownloading,"
    "AutofillServerCommunication,NetworkTimeServiceQuerying,CertificateTransparencyComponentUpdater,"
    "InterestFeedContentSuggestions,SafeBrowsing,PrivacySandboxSettings4",
]
# Chromium's preferences: no preconnect to the default search engine, no sign-in, no Safe Browsing lookups.
CHROMIUM_PREFS = {"net.network_prediction_options": 2, "signin.allowed": False, "browser.signin.allowed": False,
                  "safebrowsing.enabled": False, "search.suggest_enabled": False,
                  "alternate_error_pages.enabled": False}

# Swagger UI renders OpenAPI 3.1 (the gateway's document) from 5.0 on; 4.x shows "Unable to render this definition".
SWAGGER_UI = Path(str(swagger_ui_path)).name.removeprefix("swagger-ui-")

pytestmark = pytest.mark.timeout(180)


# ------------------------------------------------------------------------------------------------ the gateway


@dataclass
class Gateway:
    base: str
    token: str
    log: Path


@pytest.fixture
def gateway(tmp_path: Path, lxd_daemon: DaemonInfo) -> Iterator[Gateway]:
    """`python -m app` on a free loopback port against the private LXD, auth on, with one read token."""
    data = tmp_path / "data"
    data.mkdir()
    _, secret = TokenStore(data / "tokens.json").create("browser", [Scope.read])
    port = free_port()
    env = {**os.environ, "LXDGW_BIND": f"127.0.0.1:{port}", "LXDGW_DATA_DIR": str(data), "LXDGW_AUTH_ENABLED": "true",
           "LXDGW_REMOTES": json.dumps([{"name": "local", "url": f"unix://{lxd_daemon.socket_path}",
                                         "default": True}])}
    log_path = tmp_path / "gateway.log"
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the gateway exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the gateway did not answer /livez in 30 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Gateway(base=base, token=secret, log=log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


@pytest.fixture
def a_container(lxd_daemon: DaemonInfo) -> Iterator[str]:
    """A stopped busybox container made straight on the private LXD, so that the page lists something real."""
    name = f"lgw-browser-{secrets.token_hex(3)}"
    lxd = httpx.Client(transport=httpx.HTTPTransport(uds=lxd_daemon.socket_path), base_url="http://lxd",
                       timeout=120)

    def wait(response: httpx.Response) -> None:
        assert response.status_code in (200, 202), response.text
        op = lxd.get(f"{response.json()['operation']}/wait", params={"timeout": 100}).json()["metadata"]
        assert op["status"] == "Success", op

    try:
        wait(lxd.post("/1.0/instances", json={"name": name, "type": "container",
                                               "source": {"type": "image", "alias": "busybox"}}))
        yield name
    finally:
        with contextlib.suppress(httpx.HTTPError, AssertionError, KeyError):
            wait(lxd.delete(f"/1.0/instances/{name}"))
        lxd.close()


# ------------------------------------------------------------------------------------------------ the browser


class ProxyTrap:
    """A loopback listener set as Chromium's proxy: it records the request line of each connection and closes it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.hits: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="proxy-trap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the accept timeout included
                continue
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                except OSError:
                    line = ""
                self.hits.append(" ".join(line.split()[:2]).split("?", 1)[0] or "<no request line>")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@dataclass
class Browser:
    driver: webdriver.Chrome
    service: Service
    net_log: Path
    trap: ProxyTrap
    page_urls: list[str] = field(default_factory=list)
    closed: bool = False

    def drain_page_log(self) -> list[str]:
        """Every URL requested so far, from Chrome's performance log (each read empties it, so keep them)."""
        for entry in self.driver.get_log("performance"):
            message: dict[str, Any] = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.page_urls.append(message["params"]["request"]["url"])
        return self.page_urls

    def close(self) -> None:
        """Quit Chromium and chromedriver; Chromium completes its network log as it exits."""
        if self.closed:
            return
        self.closed = True
        try:
            self.driver.quit()
        finally:
            self.service.stop()
            self.trap.close()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """Debian's headless Chromium driven through Debian's chromedriver; nothing is downloaded."""
    chromium = ensure_binary("chromium", "chromium")
    chromedriver = ensure_binary("chromedriver", "chromium-driver")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver or a browser
    for name in ("selenium", "urllib3"):  # request bodies at DEBUG would carry the typed token
        logging.getLogger(name).setLevel(logging.WARNING)

    trap = ProxyTrap()
    net_log = tmp_path / "chromium-netlog.json"
    options = webdriver.ChromeOptions()
    # The program itself rather than Debian's launcher script, which adds flags that load and update extensions.
    program = Path("/usr/lib/chromium/chromium")
    options.binary_location = str(program) if program.is_file() else chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument(f"--proxy-server=http://127.0.0.1:{trap.port}")
    options.add_argument(f"--log-net-log={net_log}")
    options.add_experimental_option("prefs", CHROMIUM_PREFS)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except BaseException:
        service.stop()
        trap.close()
        raise
    holder = Browser(driver=driver, service=service, net_log=net_log, trap=trap)
    try:
        yield holder
    finally:
        holder.close()


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connections_of(net_log: Path) -> list[str]:
    """Every TCP connection attempt and UDP datagram in Chromium's network log, as `EVENT address`. A UDP
    `connect()` alone sends nothing (Chromium probes IPv6 reachability that way): it is not one."""
    text = net_log.read_text().rstrip()
    if not text.endswith("}"):  # a browser that did not exit cleanly leaves the event list open
        text = text.rstrip(",") + "]}"
    doc = json.loads(text)
    names = {number: name for name, number in doc["constants"]["logEventTypes"].items()}
    found: list[str] = []
    for event in doc["events"]:
        name, params = names.get(event["type"], ""), event.get("params") or {}
        if name in ("TCP_CONNECT_ATTEMPT", "UDP_BYTES_SENT") and "address" in params:
            addresses = [params["address"]]
        elif name == "TCP_CONNECT" and "address_list" in params:
            addresses = list(params["address_list"])
        else:
            continue
        found += [f"{name} {a}" for a in addresses]
    return found


# ------------------------------------------------------------------------------------------------ the page


def clickable(driver: webdriver.Chrome, by: str, selector: str) -> WebElement:
    element: WebElement = WebDriverWait(driver, WAIT).until(ec.element_to_be_clickable((by, selector)))
    return element


def click(driver: webdriver.Chrome, by: str, selector: str) -> WebElement:
    element = clickable(driver, by, selector)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()
    return element


def wait_for_swagger_ui(driver: webdriver.Chrome) -> None:
    """The rendered definition, or a clear failure when Swagger UI shows its error page instead."""
    rendered = (By.CSS_SELECTOR, ".swagger-ui .information-container")
    refused = (By.CSS_SELECTOR, ".swagger-ui .errors-wrapper, .swagger-ui .version-pragma")
    WebDriverWait(driver, WAIT).until(ec.any_of(ec.presence_of_element_located(rendered),
                                                ec.presence_of_element_located(refused)))
    errors = driver.find_elements(*refused)
    assert not errors, f"Swagger UI {SWAGGER_UI} did not render the definition: {errors[0].text[:300]!r}"


def test_swagger_ui_authorises_and_tries_an_operation(gateway: Gateway, a_container: str, browser: Browser) -> None:
    driver = browser.driver
    SCREENSHOT.unlink(missing_ok=True)
    spec = httpx.get(f"{gateway.base}/openapi.json", timeout=10).json()
    assert "bearer" in spec["components"]["securitySchemes"]
    operation = spec.get("paths", {}).get(PATH, {}).get(METHOD)
    assert operation, f"the OpenAPI document has no {METHOD.upper()} {PATH}"
    tag = operation["tags"][0]
    expected = httpx.get(f"{gateway.base}{PATH}", headers={"Authorization": f"Bearer {gateway.token}"}, timeout=30)
    assert expected.status_code == 200, expected.text

    try:
        driver.get(f"{gateway.base}/docs")
        wait_for_swagger_ui(driver)

        # Authorize: the bearer scheme's value, Authorize, then Close.
        click(driver, By.CSS_SELECTOR, ".auth-wrapper button.authorize")
        clickable(driver, By.CSS_SELECTOR, ".modal-ux input[aria-label='auth-bearer-value']").send_keys(gateway.token)
        click(driver, By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper button.authorize")
        WebDriverWait(driver, WAIT).until(  # authorised: the dialog now offers Logout
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper"), "Logout"))
        click(driver, By.CSS_SELECTOR, ".modal-ux button.btn-done")
        WebDriverWait(driver, WAIT).until(ec.invisibility_of_element_located((By.CSS_SELECTOR, ".modal-ux")))
        WebDriverWait(driver, WAIT).until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, ".auth-wrapper button.authorize.locked")))

        # The operation: open its tag (docExpansion is none), the operation, Try it out, Execute.
        click(driver, By.CSS_SELECTOR, f"h3.opblock-tag[data-tag='{tag}']")
        block = (f"//div[contains(@class,'opblock-{METHOD}')]"
                 f"[.//*[contains(@class,'opblock-summary-path') and @data-path='{PATH}']]")
        click(driver, By.XPATH, f"{block}//button[contains(@class,'opblock-summary-control')]")
        click(driver, By.XPATH, f"{block}//button[contains(@class,'try-out__btn')]")
        click(driver, By.XPATH, f"{block}//button[contains(@class,'execute')]")

        # The live response: its status code and its JSON body, as the page shows them.
        live = f"{block}//table[contains(@class,'live-responses-table')]/tbody"
        status_cell = WebDriverWait(driver, WAIT).until(ec.visibility_of_element_located(
            (By.XPATH, f"{live}//td[contains(@class,'response-col_status')]")))
        status = status_cell.text.strip()
        body_block = WebDriverWait(driver, WAIT).until(ec.visibility_of_element_located(
            (By.XPATH, f"{live}//td[contains(@class,'response-col_description')]//pre[contains(@class,'microlight')]")))
        body_text = body_block.get_attribute("textContent") or ""
        request_url = driver.find_element(By.XPATH, f"{block}//div[contains(@class,'request-url')]//pre").text
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", driver.find_element(By.XPATH, block))
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(WebDriverException):
            driver.save_screenshot(str(SCREENSHOT))

    assert status == "200", f"the page shows {status!r}: {body_text[:500]}"
    assert request_url.split("?", 1)[0] == f"{gateway.base}{PATH}", request_url  # with the parameters' defaults
    body = json.loads(body_text)
    assert isinstance(body.get("items"), list), body
    assert [c["name"] for c in body["items"]] == [c["name"] for c in expected.json()["items"]]
    assert a_container in [c["name"] for c in body["items"]], body

    assert SCREENSHOT.is_file()
    assert SCREENSHOT.read_bytes()[:8] == PNG_MAGIC
    assert SCREENSHOT.stat().st_size > 10_000  # a page, not a blank

    # Nothing left the machine: what the page asked for, then every connection Chromium made.
    urls = browser.drain_page_log()
    assert f"{gateway.base}/docs" in urls and f"{gateway.base}/openapi.json" in urls, urls
    assert request_url in urls, urls
    outside = [u for u in urls if not u.startswith((f"{gateway.base}/", *BROWSER_INTERNAL))]
    assert not outside, f"the page requested URLs off the gateway: {outside}"
    browser.close()
    connections = connections_of(browser.net_log)
    assert f"TCP_CONNECT_ATTEMPT {gateway.base.removeprefix('http://')}" in connections, connections
    off_machine = [c for c in connections if not _is_loopback(c.split(" ", 1)[1])]
    assert not off_machine, f"Chromium reached beyond loopback: {off_machine}; caught by the proxy trap: " \
                            f"{browser.trap.hits}"
