"""One live app (gunicorn on the test emulator) and one headless Debian chromium per run, for the browser tests."""

import os

import pytest

from .app import ADMIN_TOKEN, ARTIFACTS, ROOT, artifact
from .appserver import Gunicorn, app_environ

CHROMIUM = "/usr/bin/chromium"
SHOTS = os.path.join(ARTIFACTS, "screenshots")
README_SHOTS = os.path.join(ROOT, "docs", "screenshots")  # the README's pictures, rewritten by every run
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def live_server(emulator, tmp_path_factory):
    """The app under gunicorn on a free loopback port, against the test emulator: its base URL."""
    env = app_environ(emulator.environ(), ADMIN_TOKEN, tmp_path_factory.mktemp("gunicorn") / "kek.bin")
    log_path = artifact("browser-gunicorn.log")
    if os.path.exists(log_path):
        os.remove(log_path)
    try:
        server = Gunicorn(env, log_path, threads=4).__enter__()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield server.base
    server.__exit__()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update",
            "--disable-gpu", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server, datastore):
    """A desktop-sized page on an emptied Datastore; fails the test on any console error (CSP included)."""
    os.makedirs(SHOTS, exist_ok=True)
    context = browser.new_context(viewport=DESKTOP, base_url=live_server)
    page = context.new_page()
    errors = []
    # 400/502 pages are expected here; a refused inline script or style (CSP) or a missing asset is not.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error"
            and not m.text.startswith("Failed to load resource: the server responded with a status") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
            if r.request.resource_type != "document" and r.status >= 400 else None)
    yield page
    context.close()
    assert errors == [], errors


def shot(page, name, full_page=True, readme=False):
    """A screenshot in artifacts/; `readme=True` also refreshes the README's copy in docs/screenshots/."""
    page.screenshot(path=os.path.join(SHOTS, name), full_page=full_page)
    if readme:
        os.makedirs(README_SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(README_SHOTS, name), full_page=full_page)


def sign_in(page):
    """Sign in through the form with the test admin token; on /admin after."""
    page.goto("/admin")
    assert "/signin" in page.url
    page.fill("#token", ADMIN_TOKEN)
    shot(page, "01-signin.png")
    page.click("main button[type=submit]")
    page.wait_for_url("**/admin")
