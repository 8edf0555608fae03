"""Shared fixtures: the Datastore emulator, settings, the app and its clients; the harness's fixtures made visible."""

import os

import pytest
import webtest
from google.cloud import ndb

import main
import settings as settings_module
from devserver.emulator import Emulator
from tests.harness.app import ADMIN_TOKEN, admin_client, artifact, read, served, token_of  # noqa: F401 - served: a fixture
from tests.harness.deploy import repo  # noqa: F401 - a fixture
from tests.harness.live import browser, live_server, page  # noqa: F401 - fixtures
from tests.harness import profiles

profiles.load()

# Cost markers applied from the fixtures a test uses (the rest: module pytestmark, see pytest.ini).
MARK_BY_FIXTURE = {"emulator": "emulator", "browser": "browser"}


def pytest_collection_modifyitems(config, items):
    """Mark each test that uses the emulator or the browser, whether directly or through another fixture.

    The browser tests run last: Playwright's sync API leaves its event loop set as the thread's running
    loop while the session's browser is open, so a later `asyncio.run()` in the same process would fail.
    Under pytest-xdist (`--dist loadgroup`), a module's tests stay on one worker (its module-scoped servers
    start once) and every browser test goes to the same worker (one gunicorn and one chromium), as the
    last group handed out.
    """
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))  # stable: order kept otherwise
    for item in items:
        for fixture, marker in MARK_BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
        group = "browser" if "browser" in getattr(item, "fixturenames", ()) else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def emulator():
    """One in-memory Datastore emulator for the whole run, stopped at the end."""
    emu = Emulator(log_path=artifact("emulator.log")).start()
    saved = {k: os.environ.get(k) for k in emu.environ()}
    os.environ.update(emu.environ())
    yield emu
    emu.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def datastore(emulator):
    """The emulator, emptied before the test (its POST /reset)."""
    emulator.reset()
    return emulator


@pytest.fixture
def ndb_context(datastore):
    """An ndb context for tests that call models directly."""
    with ndb.Client().context(cache_policy=False, global_cache_policy=False) as context:
        yield context


@pytest.fixture
def settings(tmp_path):
    """Test settings: a known admin token and a KEK file of the test's own."""
    return settings_module.from_environ({}, admin_token=ADMIN_TOKEN,
                                        local_kek_file=str(tmp_path / "kek.bin"))


@pytest.fixture
def app(datastore, settings):
    """The WSGI app as gunicorn would run it, on the emptied emulator."""
    return main.create_app(settings)


@pytest.fixture
def client(app):
    """An anonymous client."""
    return webtest.TestApp(app)


@pytest.fixture
def admin(app):
    """A client that sends the admin token, signed in for the HTML pages (Bearer is read on /api/ only)."""
    return admin_client(app)


@pytest.fixture
def signed_in(app):
    """A browser signed in through the sign-in form (session cookie, CSRF token from the page)."""
    b = webtest.TestApp(app)
    signin = b.get("/admin").follow()
    b.post("/signin", {"token": ADMIN_TOKEN, "csrf_token": token_of(signin), "next": "/admin"}, status=302)
    return b


@pytest.fixture(scope="session")
def run_pki():
    """The run's test PKI (tests.harness.pki.RunPKI): our CA tree, a stranger's, server certificates; made once."""
    from tests.harness.pki import RunPKI
    return RunPKI()


@pytest.fixture(scope="session")
def demo_pki(tmp_path_factory):
    """The demo PKI of `make run` (CA, peer chain, client chain with an intermediate), made once."""
    from devserver import demo_pki as pki
    return pki.generate(str(tmp_path_factory.mktemp("demo-pki")))


@pytest.fixture
def upload(demo_pki):
    """A valid PUT body for the demo client identity (target: a documentation address)."""
    return {"cert": read(demo_pki, "client-chain.pem"), "key": read(demo_pki, "client-key.pem"),
            "ca_certs": read(demo_pki, "ca.pem"), "host": "peer.example.com", "port": 8443}


@pytest.fixture(scope="session")
def demo_peer(demo_pki):
    """The demo mTLS peer of `make run` on free loopback ports: (https_port, echo_port)."""
    from devserver import demo_peer as peer
    from tests.harness.ports import free_port
    servers = peer.serve(demo_pki, free_port(), free_port())
    yield tuple(s.server_address[1] for s in servers)
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def expiring_and_expired(admin, upload, settings):
    """carol/1 expires in 10 days (stored through the API); carol/2 expired 3 days ago."""
    import datetime

    import models
    from tests.harness.pki import pem_pair
    now = datetime.datetime.now(datetime.timezone.utc)
    cert, key = pem_pair(now - datetime.timedelta(days=80), now + datetime.timedelta(days=10, hours=1))
    admin.put_json("/api/v1/employees/carol/addresses/1", dict(upload, cert=cert, key=key), status=201)
    cert, key = pem_pair(now - datetime.timedelta(days=100), now - datetime.timedelta(days=3, hours=1))
    # The API refuses an expired certificate (certificate_expired): store it as of a time it was valid.
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        models.put_identity("carol", 2, dict(upload, cert=cert, key=key), settings,
                            now=now - datetime.timedelta(days=50))
