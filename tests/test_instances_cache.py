"""The Redis global cache going away and coming back under three instances: calls stay right throughout.

What a user sees while Redis is down: calls and sign-in work (identities are read from Datastore, each
instance logs "Error connecting to global cache"); uploads and rotations answer 503 cache_unavailable
and change nothing, since ndb must lock the cached copy before it writes; all is back once Redis is.
"""

import os
import signal

import pytest

from tests.harness import nginx
from tests.harness import pki
from tests.harness import redisserver
from tests.harness.instances import Instances, identity_body, leaf_sha1, peer_saw
from tests.harness.instances import URL, every_instance_presents, session_csrf, sign_in

pytestmark = [pytest.mark.skipif(not nginx.available(), reason="nginx is not installed"),
              pytest.mark.skipif(not redisserver.available(), reason="redis-server is not installed")]


@pytest.fixture(scope="module")
def world():
    p = pki.make_pki("instances-cache")
    creds = {name: pki.client_cert(p.clients_ca, name) for name in ("first", "second")}
    with nginx.NginxPeer(pki.server_cert(p.root), p.ca_pem) as peer:
        yield dict(pki=p, peer=peer, **creds)


@pytest.fixture(scope="module")
def cluster(emulator, tmp_path_factory):
    """Three instances on one Redis, started once for the module (each test leaves Redis running)."""
    with redisserver.RedisServer() as redis:
        with Instances(emulator, str(tmp_path_factory.mktemp("instances-cache")), redis_url=redis.url) as apps:
            apps.redis = redis
            yield apps


@pytest.fixture
def apps(cluster, emulator):
    emulator.reset()
    if cluster.redis.process is None:
        cluster.redis.start()
    cluster.redis.flush()
    yield cluster
    if cluster.redis.process is None:
        cluster.redis.start()


@pytest.fixture
def admin(apps):
    client = apps.browser()
    client.session.headers["Authorization"] = f"Bearer {apps.token}"
    yield client
    client.close()


def test_redis_stopped_calls_stay_right_rotations_wait_and_all_is_back_when_it_returns(apps, admin, world):
    peer, ca = world["peer"], world["pki"].ca_pem
    assert admin.put(URL, on=0, json=identity_body(world["first"], peer, ca)).status_code == 201
    every_instance_presents(admin, apps, world["first"])
    assert int(apps.redis.command("DBSIZE").lstrip(":")) >= 1  # the identity is cached

    apps.redis.stop()
    every_instance_presents(admin, apps, world["first"])  # read from Datastore instead
    browser = apps.browser()
    sign_in(browser, apps.token)  # sessions are not cached: sign-in needs no Redis
    assert browser.get("/api/v1/identities").status_code == 200
    staged = admin.put(URL + "/next", on=1, json=identity_body(world["second"], peer, ca))
    assert staged.status_code == 503 and staged.json()["error"]["code"] == "cache_unavailable"
    assert staged.headers["Retry-After"] == "5"
    replaced = admin.put(URL, on=2, json=identity_body(world["second"], peer, ca))
    assert replaced.status_code == 503 and replaced.json()["error"]["code"] == "cache_unavailable"
    view = admin.get(URL, on=0).json()
    assert view["fingerprint_sha256"] == world["first"].fingerprint_sha256 and view["next"] is None
    every_instance_presents(admin, apps, world["first"])
    assert "Error connecting to global cache" in apps.logs()

    apps.redis.start()  # same port, empty, as a restarted Memorystore Basic instance
    assert admin.put(URL + "/next", on=1, json=identity_body(world["second"], peer, ca)).status_code in (200, 201)
    assert admin.post(URL + "/promote", on=2).status_code == 200
    every_instance_presents(admin, apps, world["second"])
    assert int(apps.redis.command("DBSIZE").lstrip(":")) >= 1  # cached again


def test_a_frozen_redis_costs_calls_its_timeout_not_their_answer(apps, admin, world):
    """A Redis that accepts nothing (SIGSTOP, as a network black hole): calls still answer, and right."""
    peer, ca = world["peer"], world["pki"].ca_pem
    assert admin.put(URL, on=0, json=identity_body(world["first"], peer, ca)).status_code == 201
    every_instance_presents(admin, apps, world["first"])
    os.kill(apps.redis.process.pid, signal.SIGSTOP)
    try:
        every_instance_presents(admin, apps, world["first"])
        promoted = admin.post(URL + "/promote", on=1)  # nothing staged: refused before any write
        assert promoted.status_code == 409
    finally:
        os.kill(apps.redis.process.pid, signal.SIGCONT)
    every_instance_presents(admin, apps, world["first"])


def test_a_session_signed_out_while_redis_is_down_stays_out(apps):
    """Sign-out needs no Redis either: the copied cookie is refused everywhere."""
    browser = apps.browser()
    sign_in(browser, apps.token)
    apps.redis.stop()
    assert browser.post("/signout", on=1, data={"csrf_token": session_csrf(browser, on=0)}).status_code == 302
    apps.redis.start()
    for i in range(len(apps)):
        assert browser.get("/api/v1/identities", on=i).status_code == 401


def test_a_write_around_the_cache_is_what_the_cache_cannot_see(apps, admin, world, settings):
    """Why every writer must share the cache: a change made with a context without it (a maintenance
    script) leaves the cached copy in Redis, and the instances keep presenting the old identity."""
    import models
    from google.cloud import ndb
    peer, ca = world["peer"], world["pki"].ca_pem
    assert admin.put(URL, on=0, json=identity_body(world["first"], peer, ca)).status_code == 201
    every_instance_presents(admin, apps, world["first"])
    kek_settings = type(settings)(**dict(vars(settings), local_kek_file=apps.env["LOCAL_KEK_FILE"]))
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        models.put_identity("asalieri", 1, identity_body(world["second"], peer, ca), kek_settings)
    presented, seen = peer_saw(admin, URL, on=1)
    assert (presented, seen) == (world["first"].fingerprint_sha256, leaf_sha1(world["first"]))  # stale
    apps.redis.flush()  # what such a script must do afterwards
    every_instance_presents(admin, apps, world["second"])


def test_a_write_through_the_shared_cache_is_what_every_instance_presents_next(apps, admin, world, settings):
    """The twin: the same script writing through globalcache.ndb_context needs no flush."""
    import globalcache
    import models
    import settings as settings_module
    from google.cloud import ndb
    peer, ca = world["peer"], world["pki"].ca_pem
    assert admin.put(URL, on=0, json=identity_body(world["first"], peer, ca)).status_code == 201
    every_instance_presents(admin, apps, world["first"])
    script = settings_module.from_environ(apps.env)
    with globalcache.ndb_context(ndb.Client(), globalcache.from_settings(script)):
        models.put_identity("asalieri", 1, identity_body(world["second"], peer, ca), script)
    every_instance_presents(admin, apps, world["second"])
