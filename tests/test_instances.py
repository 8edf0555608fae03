"""Many instances, one truth: three gunicorn processes on one Datastore, each request to the next one.

Every test runs twice: on Datastore alone, and with ndb's global cache on a real redis-server
(REDIS_CACHE_URL), where a stale cached identity would show as the wrong certificate at the peer.
"""

import re

import pytest
from google.cloud import ndb

from tests.harness import nginx
from tests.harness import pki
from tests.harness import redisserver
import sessions
from tests.harness.instances import (
    URL, Instances, every_instance_presents, form_token, identity_body, session_csrf, sign_in)


pytestmark = pytest.mark.skipif(not nginx.available(), reason="nginx is not installed")


@pytest.fixture(scope="module")
def world():
    p = pki.make_pki("instances")
    creds = {name: pki.client_cert(p.clients_ca, name) for name in ("first", "second", "third")}
    with nginx.NginxPeer(pki.server_cert(p.root), p.ca_pem) as peer:
        yield dict(pki=p, peer=peer, **creds)


@pytest.fixture(scope="module", params=["datastore", "redis"])
def cluster(request, emulator, tmp_path_factory):
    """Three instances; with the Redis global cache in the `redis` run."""
    redis = None
    if request.param == "redis":
        if not redisserver.available():
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        redis = redisserver.RedisServer().start()
    try:
        with Instances(emulator, str(tmp_path_factory.mktemp("instances")),
                       redis_url=redis.url if redis else None) as apps:
            apps.redis = redis
            yield apps
    finally:
        if redis:
            redis.stop()


@pytest.fixture
def apps(cluster, emulator):
    """The instances over an emptied Datastore (and an emptied cache: no entity outlives its stored copy)."""
    emulator.reset()
    if cluster.redis:
        cluster.redis.flush()
    return cluster


@pytest.fixture
def admin(apps):
    """An API client (Bearer token), round robin."""
    client = apps.browser()
    client.session.headers["Authorization"] = f"Bearer {apps.token}"
    yield client
    client.close()


def test_a_session_started_on_one_instance_works_on_every_other(apps, world):
    browser = apps.browser()
    sign_in(browser, apps.token)
    token = session_csrf(browser, on=2)
    # The CSRF token issued by instance 2, used on instance 0: a cookie-borne change goes through.
    answer = browser.put(URL, on=0, json=identity_body(world["first"], world["peer"], world["pki"].ca_pem),
                         headers={"X-CSRF-Token": token})
    assert answer.status_code == 201, answer.text
    for i in range(len(apps)):
        assert browser.get("/api/v1/identities", on=i).json()["identities"][0]["employee"] == "asalieri"
        assert session_csrf(browser, on=i) == token  # one session, one token, wherever it is asked


def test_a_forged_csrf_token_is_refused_on_every_instance(apps, world):
    """The twin: the same cookie without its session's token changes nothing anywhere."""
    browser = apps.browser()
    sign_in(browser, apps.token)
    for i in range(len(apps)):
        answer = browser.put(URL, on=i, json=identity_body(world["first"], world["peer"], world["pki"].ca_pem),
                             headers={"X-CSRF-Token": "x" * 43})
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "csrf_failed"
    assert browser.get("/api/v1/identities").json()["identities"] == []


def test_signing_out_on_one_instance_ends_the_session_on_every_other(apps):
    browser = apps.browser()
    sign_in(browser, apps.token)
    cookies = browser.session.cookies.copy()  # a copy of the cookie, as a thief would keep it
    for i in range(len(apps)):
        assert browser.get("/api/v1/identities", on=i).status_code == 200
    answer = browser.post("/signout", on=2, data={"csrf_token": session_csrf(browser, on=1)})
    assert answer.status_code == 302
    thief = apps.browser()
    thief.session.cookies.update(cookies)
    for i in range(len(apps)):
        assert thief.get("/api/v1/identities", on=i).status_code == 401


def test_a_session_not_signed_out_stays_on_every_instance(apps):
    """The twin: another browser's sign-out does not end this one's session."""
    kept, other = apps.browser(), apps.browser()
    sign_in(kept, apps.token)
    sign_in(other, apps.token)
    other.post("/signout", on=0, data={"csrf_token": session_csrf(other, on=1)})
    for i in range(len(apps)):
        assert kept.get("/api/v1/identities", on=i).status_code == 200
        assert other.get("/api/v1/identities", on=i).status_code == 401


def test_an_upload_draft_made_on_one_instance_completes_on_another(apps, world):
    browser = apps.browser()
    sign_in(browser, apps.token)
    creds, ca = world["first"], world["pki"].ca_pem.decode()
    fields = {"employee": "asalieri", "address": "1", "cert": creds.cert_pem.decode(), "key": creds.key_pem.decode(),
              "key_password": "", "ca_certs": ca, "host": "bad host!", "port": str(world["peer"].port),
              "server_hostname": "localhost", "tls_version": "TLS"}
    form = browser.get("/admin/new", on=0)
    failed = browser.post("/admin/new", on=0, files={k: (None, v) for k, v in
                                                     dict(fields, csrf_token=form_token(form)).items()})
    assert failed.status_code == 400
    draft = re.search(r'name="draft" value="([^"]+)"', failed.text).group(1)
    assert creds.key_pem.decode().splitlines()[1] not in failed.text
    # The host fixed, the key left empty, posted to instance 1: the key kept on instance 0 is used.
    done = browser.post("/admin/new", on=1, files={k: (None, v) for k, v in dict(
        fields, host="127.0.0.1", key="", draft=draft, csrf_token=form_token(failed)).items()})
    assert done.status_code == 303, done.text
    stored = browser.get(URL, on=2).json()
    assert stored["fingerprint_sha256"] == creds.fingerprint_sha256


def test_failed_sign_ins_count_once_across_all_instances(apps, emulator):
    browser = apps.browser()
    for attempt in range(sessions.FREE_ATTEMPTS + 1):  # each wrong token to the next instance
        page = browser.get("/signin")
        answer = browser.post("/signin", data={"token": "wrong-token-" + "x" * 20, "csrf_token": form_token(page)})
        assert answer.status_code == 401
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        counters = {c.key.id(): c for c in sessions.SignInAttempts.query().fetch()}
    [counter] = [c for name, c in counters.items() if name != "all-addresses"]  # this address's own counter
    assert counter.failures == sessions.FREE_ATTEMPTS + 1  # counted once each, whichever instance saw it
    assert counters["all-addresses"].failures == sessions.FREE_ATTEMPTS + 1  # and once in the global cap
    for i in range(len(apps)):  # now every instance makes this address wait for a wrong token ...
        page = browser.get("/signin", on=i)
        answer = browser.post("/signin", on=i, data={"token": "wrong-token-" + "y" * 20, "csrf_token": form_token(page)})
        assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    for i in range(len(apps)):  # ... and the right token still gets in (an attacker cannot keep the admin out)
        page = browser.get("/signin", on=i)
        answer = browser.post("/signin", on=i, data={"token": apps.token, "csrf_token": form_token(page)})
        assert answer.status_code == 302, answer.text


def test_free_failed_sign_ins_across_instances_do_not_lock_out(apps):
    """The twin: the free wrong tokens spread over the instances leave the right one accepted."""
    browser = apps.browser()
    for attempt in range(sessions.FREE_ATTEMPTS):
        page = browser.get("/signin")
        assert browser.post("/signin", data={"token": "wrong-token-" + "x" * 20,
                                             "csrf_token": form_token(page)}).status_code == 401
    sign_in(browser, apps.token)
    for i in range(len(apps)):
        assert browser.get("/api/v1/identities", on=i).status_code == 200


def test_rotation_promote_and_rollback_through_one_instance_are_what_every_other_presents_next(apps, admin, world):
    peer, ca = world["peer"], world["pki"].ca_pem
    assert admin.put(URL, on=0, json=identity_body(world["first"], peer, ca)).status_code == 201
    every_instance_presents(admin, apps, world["first"])  # each instance has read (and cached) "first"
    assert admin.put(URL + "/next", on=1, json=identity_body(world["second"], peer, ca)).status_code in (200, 201)
    every_instance_presents(admin, apps, world["first"])  # staged is not current: nothing changes yet
    assert admin.post(URL + "/promote", on=2).status_code == 200
    every_instance_presents(admin, apps, world["second"])
    assert admin.post(URL + "/rollback", on=0).status_code == 200
    every_instance_presents(admin, apps, world["first"])
    assert admin.put(URL, on=1, json=identity_body(world["third"], peer, ca)).status_code == 200
    every_instance_presents(admin, apps, world["third"])
    if apps.redis:  # the calls above were served from the cache, not around it
        assert int(apps.redis.info("keyspace_hits")) > 0


def test_a_deleted_identity_is_gone_on_every_instance(apps, admin, world):
    """The twin of a replacement: after DELETE through one instance no instance calls with it."""
    assert admin.put(URL, on=0, json=identity_body(world["first"], world["peer"], world["pki"].ca_pem)).status_code == 201
    every_instance_presents(admin, apps, world["first"])
    assert admin.request("DELETE", URL, on=1).status_code == 204
    for i in range(len(apps)):
        answer = admin.post(URL + "/request", on=i, json={"path": "/"})
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
