"""Issue 11, web layer: each finding attacked, each with its legitimate twin on the same harness.

CSRF on the JSON API and on forms, cookie tossing, open redirects, body caps, no-store,
server-side sign-out, sign-in rate limits, odd input, HSTS and __Host- cookies.
"""

import dataclasses
import io
import json
import os
import urllib.parse

import pytest
import webtest
from google.cloud import datastore as raw_datastore

import main
import settings as settings_module
from handlers import auth
from tests.harness.app import token_of
from tests.harness.browser import signed_in
from tests.harness.loopback import CountingListener

URL = "/api/v1/employees/asalieri/addresses/1"
PAGE = "/admin/employees/asalieri/addresses/1"
ORIGIN = "http://localhost:80"  # webtest's own origin (HTTP_HOST localhost:80)


def raw_entity(employee="asalieri", address=1):
    db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
    entity = db.get(db.key("Employee", employee, "Address", address))
    return dict(entity) if entity is not None else None


def sign_in(app, remote="192.0.2.10", **environ):
    """A browser signed in through /signin from `remote`: (client, the token its pages carry)."""
    return signed_in(app, app.settings.admin_token, REMOTE_ADDR=remote, **environ)


@pytest.fixture
def app(datastore, settings):
    application = main.create_app(settings)
    application.settings = settings
    return application


@pytest.fixture
def stored(app, upload):
    """asalieri/1 stored through the API (Bearer): the raw entity before the attack."""
    admin = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {app.settings.admin_token}"})
    admin.put(URL, json.dumps(upload), content_type="application/json", status=201)
    return raw_entity()


@pytest.fixture
def listener():
    server = CountingListener()
    yield server
    server.close()


# --- 1. CSRF on the JSON API ----------------------------------------------------------------------

def test_simple_post_with_the_session_cookie_reaches_no_partner(app, upload, listener):
    admin = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {app.settings.admin_token}"})
    admin.put(URL, json.dumps(dict(upload, host="127.0.0.1", port=listener.port)),
              content_type="application/json", status=201)
    browser, token = sign_in(app)
    body = json.dumps({"method": "GET", "path": "/"})
    refused = browser.post(URL + "/request", body, content_type="text/plain", status=403)
    assert refused.json["error"]["code"] == "csrf_failed"
    browser.post(URL + "/handshake", "", status=403)
    assert listener.accepted == 0
    # The twin: the same browser with its token and a JSON body does reach the partner.
    twin = browser.post(URL + "/handshake", "", headers={"X-CSRF-Token": token}, status=502)
    assert twin.json["ok"] is False and listener.accepted == 1


@pytest.mark.parametrize("verb", ["PUT", "DELETE"])
def test_cookie_writes_need_the_csrf_header(app, stored, upload, verb):
    browser, token = sign_in(app)
    body = json.dumps(dict(upload, port=9999)) if verb == "PUT" else ""
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": token + "x"}):
        response = browser.request(URL, method=verb, body=body.encode(), headers=headers,
                                   content_type="application/json", status=403)
        assert response.json["error"]["code"] == "csrf_failed"
        assert raw_entity() == stored
    browser.request(URL, method=verb, body=body.encode(), headers={"X-CSRF-Token": token},
                    content_type="application/json", status=200 if verb == "PUT" else 204)
    assert raw_entity() != stored


@pytest.mark.parametrize("headers", [{"Origin": "http://localhost:8081"}, {"Origin": "null"},
                                     {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
                                     {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "same-site"},
                                     {"Sec-Fetch-Site": "cross-site"}])
def test_foreign_origin_is_refused_even_with_the_token(app, stored, headers):
    browser, token = sign_in(app)
    response = browser.delete(URL, headers=dict(headers, **{"X-CSRF-Token": token}), status=403)
    assert response.json["error"]["code"] == "csrf_failed"
    assert raw_entity() == stored


@pytest.mark.parametrize("headers", [{"Origin": ORIGIN}, {"Origin": "http://localhost"},
                                     {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"},
                                     {"Origin": "null", "Sec-Fetch-Site": "same-origin"}])
def test_own_origin_is_accepted(app, stored, headers):
    browser, token = sign_in(app)
    browser.delete(URL, headers=dict(headers, **{"X-CSRF-Token": token}), status=204)
    assert raw_entity() is None


def test_cookie_json_body_needs_application_json(app, stored, upload):
    browser, token = sign_in(app)
    body = json.dumps(dict(upload, port=9999))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = browser.put(URL, body, content_type=content_type, headers={"X-CSRF-Token": token}, status=415)
        assert response.json["error"]["code"] == "unsupported_media_type"
    assert raw_entity() == stored
    browser.put(URL, body, content_type="application/json; charset=utf-8", headers={"X-CSRF-Token": token},
                status=200)


def test_bearer_requests_need_neither_token_nor_content_type(app, stored, upload):
    admin = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {app.settings.admin_token}"})
    admin.put(URL, json.dumps(dict(upload, port=9999)), content_type="application/x-www-form-urlencoded",
              status=200)  # curl -d
    assert raw_entity()["port"] == 9999


@pytest.fixture
def gae_app(datastore, settings):
    application = main.create_app(dataclasses.replace(settings, on_app_engine=True,
                                                      allow_local_kek_on_app_engine=True))
    application.settings = settings
    return application


GAE_ADMIN = {"HTTP_X_APPENGINE_USER_EMAIL": "admin@example.com", "HTTP_X_APPENGINE_USER_IS_ADMIN": "1"}


def test_app_engine_login_cookie_follows_the_same_rules(gae_app, upload):
    browser = webtest.TestApp(gae_app, extra_environ=GAE_ADMIN)
    token = token_of(browser.get("/admin/new"))
    body = json.dumps(upload)
    refused = browser.put(URL, body, content_type="application/json", status=403)
    assert refused.json["error"]["code"] == "csrf_failed" and raw_entity() is None
    browser.put(URL, body, content_type="text/plain", headers={"X-CSRF-Token": token}, status=415)
    browser.put(URL, body, content_type="application/json", headers={"X-CSRF-Token": token,
                                                                     "Origin": "https://evil.example"}, status=403)
    assert raw_entity() is None
    browser.put(URL, body, content_type="application/json", headers={"X-CSRF-Token": token}, status=201)
    # Another admin's browser cannot use this token.
    other = webtest.TestApp(gae_app, extra_environ=dict(GAE_ADMIN, HTTP_X_APPENGINE_USER_EMAIL="b@example.com"))
    other.get("/admin/new")
    other.delete(URL, headers={"X-CSRF-Token": token}, status=403)
    assert raw_entity() is not None


def test_script_free_forms_still_work(app, stored):
    browser, token = sign_in(app)
    page = browser.get(PAGE + "/delete")
    browser.post(PAGE + "/delete", {"csrf_token": token_of(page)}, headers={"Origin": ORIGIN}, status=303)
    assert raw_entity() is None


# --- 2. the form token is bound to the session ----------------------------------------------------

def test_cookie_tossing_cannot_forge_the_form_token(app, stored):
    attacker = webtest.TestApp(app)
    attacker_token = token_of(attacker.get("/signin"))
    tossed = attacker.cookies[auth.CSRF_COOKIE]
    browser, _ = sign_in(app)
    browser.set_cookie(auth.CSRF_COOKIE, tossed)  # set from another port of the same host
    for token in (tossed, attacker_token):
        response = browser.post(PAGE + "/delete", {"csrf_token": token}, status=403)
        assert "csrf_failed" in response.text
    assert raw_entity() == stored
    browser.post(PAGE + "/delete", {"csrf_token": token_of(browser.get(PAGE + "/delete"))}, status=303)
    assert raw_entity() is None


@pytest.mark.parametrize("headers", [{"Origin": "http://localhost:8081"}, {"Sec-Fetch-Site": "same-site"}])
def test_forms_refuse_a_foreign_origin(app, stored, headers):
    browser, token = sign_in(app)
    browser.post(PAGE + "/delete", {"csrf_token": token}, headers=headers, status=403)
    assert raw_entity() == stored
    client = webtest.TestApp(app)
    form = token_of(client.get("/signin"))
    client.post("/signin", {"token": app.settings.admin_token, "csrf_token": form}, headers=headers, status=403)
    assert auth.SESSION_COOKIE not in client.cookies


def test_secure_cookies_carry_the_host_prefix(app):
    https = webtest.TestApp(app, extra_environ={"wsgi.url_scheme": "https", "HTTP_HOST": "localhost:443"})
    page = https.get("/signin")
    cookies = page.headers.getall("Set-Cookie")
    assert cookies and all(c.startswith("__Host-") and "secure" in c.lower() and "Path=/" in c
                           for c in cookies), cookies
    assert not any("Domain" in c for c in cookies)
    https.post("/signin", {"token": app.settings.admin_token, "csrf_token": token_of(page)}, status=302)
    assert https.get("/admin").status_int == 200
    plain = webtest.TestApp(app).get("/signin").headers.getall("Set-Cookie")  # the twin, over http
    assert plain and not any(c.startswith("__Host-") or "secure" in c.lower() for c in plain)


# --- 3. open redirect after sign-in ---------------------------------------------------------------

OFF_SITE = ["//evil.example/", "/\t/evil.example/", "/\n/evil.example/", "/\r/evil.example/", "/%09/evil.example/",
            "/%0a/evil.example/", "/%0d/evil.example/", "/\\evil.example", "\\\\evil.example", "/\\/evil.example",
            "https://evil.example/", "http:evil.example", "javascript:alert(1)", "/%2f/evil.example",
            "/%2F%2Fevil.example", "/%5c/evil.example", "/%5C%5Cevil.example", "%2f%2fevil.example",
            " //evil.example", "\x00//evil.example", "/\x00/evil.example", "///evil.example", "/\u3000/evil.example",
            "/%252f%252fevil.example", "data:text/html,x", "evil.example", "", "/\x7f/evil.example",
            "/.\\evil.example", "/\uff0f/evil.example", "/%E3%80%80/evil.example", "//evil.example@x"]


def signed_in_redirect(app, target, host="localhost:80"):
    client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.77", "HTTP_HOST": host})
    token = token_of(client.get("/signin"))
    response = client.post("/signin", {"token": app.settings.admin_token, "csrf_token": token, "next": target},
                           status=302)
    return response.headers["Location"]


@pytest.mark.parametrize("target", OFF_SITE)
def test_sign_in_never_redirects_off_site(app, target):
    assert signed_in_redirect(app, target) == "/admin"


@pytest.mark.parametrize("target", ["/admin", "/admin/employees/a.b@c/addresses/7?saved=created",
                                    "/api/v1/status", "/admin/new?employee=x&address=2"])
def test_sign_in_follows_a_path_on_this_app(app, target):
    assert signed_in_redirect(app, target) == target


def test_redirects_are_relative_and_never_echo_host(app):
    assert signed_in_redirect(app, "/admin", host="evil.example") == "/admin"
    login = webtest.TestApp(app).get("/admin", headers={"Host": "evil.example"}, status=302)
    assert login.headers["Location"].startswith("/signin?next=")


# --- 5. request bodies are capped before they are read --------------------------------------------

class Exploding(io.RawIOBase):
    """A request body that fails the test if more than `allowed` bytes are read."""

    def __init__(self, allowed, total):
        self.allowed, self.total, self.read_bytes = allowed, total, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.read_bytes >= self.total:
            return 0
        n = min(len(buffer), self.total - self.read_bytes)
        self.read_bytes += n
        assert self.read_bytes <= self.allowed, f"read {self.read_bytes} bytes"
        buffer[:n] = b"a" * n
        return n


def call(app, path, method="POST", body=None, content_length=None, chunked=False, headers=None):
    """Call the WSGI app directly (webtest always frames bodies): (status, headers, body)."""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "localhost", "SERVER_PORT": "80",
               "HTTP_HOST": "localhost", "wsgi.url_scheme": "http", "wsgi.input": body or io.BytesIO(b""),
               "wsgi.errors": io.StringIO(), "REMOTE_ADDR": "192.0.2.5", "CONTENT_TYPE": "application/json"}
    if content_length is not None:
        environ["CONTENT_LENGTH"] = str(content_length)
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    environ.update(headers or {})
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(headers)

    data = b"".join(app(environ, start_response))
    return int(seen["status"].split()[0]), seen["headers"], data


@pytest.mark.parametrize("path", ["/signin", "/signout", "/cron/expiry", "/api/v1/fetch", URL, PAGE + "/delete"])
def test_a_huge_declared_body_is_refused_unread(app, path):
    body = Exploding(0, 100 * 1024 * 1024)
    status, _, data = call(app, path, body=io.BufferedReader(body), content_length=100 * 1024 * 1024)
    assert status == 413 and json.loads(data)["error"]["code"] == "too_large" and body.read_bytes == 0


@pytest.mark.parametrize("path,cap", [("/signin", 16 * 1024), (URL, 256 * 1024), ("/admin/new", 512 * 1024)])
def test_a_huge_chunked_body_is_refused_after_the_cap(app, path, cap):
    body = Exploding(cap + 64 * 1024 + 1, 100 * 1024 * 1024)
    status, _, data = call(app, path, method="PUT" if path == URL else "POST",
                           body=io.BufferedReader(body, 1), chunked=True)
    assert status == 413 and json.loads(data)["error"]["code"] == "too_large"


def test_bodies_under_the_cap_are_read_whole(app, stored, upload):
    # Chunked and Bearer: the identity PUT goes through, read in full.
    raw = json.dumps(dict(upload, port=9443)).encode()
    status, _, data = call(app, URL, method="PUT", body=io.BytesIO(raw), chunked=True,
                           headers={"HTTP_AUTHORIZATION": f"Bearer {app.settings.admin_token}"})
    assert status == 200, data
    assert raw_entity()["port"] == 9443
    status, _, _ = call(app, "/signin", body=io.BytesIO(b"token=x"), content_length=7,
                        headers={"CONTENT_TYPE": "application/x-www-form-urlencoded"})
    assert status == 403  # read, then refused for its missing CSRF token, not for its size


@pytest.mark.parametrize("value", ["abc", "-1", "\u0661\u0662", "1e9", " 5"])
def test_a_malformed_content_length_is_a_400(app, value):
    status, _, data = call(app, "/signin", body=io.BytesIO(b"x"), content_length=value)
    assert status == 400 and json.loads(data)["error"]["code"] == "invalid_request"


# --- 7. no-store on authenticated responses -------------------------------------------------------

def test_authenticated_responses_are_never_stored(app, stored):
    admin = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {app.settings.admin_token}"})
    browser, _ = sign_in(app)
    for client, path in ((admin, URL), (admin, "/api/v1/status"), (browser, "/admin"), (browser, PAGE),
                         (admin, "/cron/expiry"), (browser, "/admin/nothing-here")):
        response = client.get(path, status="*")
        assert response.headers["Cache-Control"] == "no-store", path
    assert webtest.TestApp(app).get("/static/style.css").headers["Cache-Control"] == "public, max-age=600"


# --- 8. sessions end server-side; sign-in throttled; short tokens refused --------------------------

def test_sign_out_ends_the_session_server_side(app):
    browser, token = sign_in(app)
    captured = browser.cookies[auth.SESSION_COOKIE]
    other, _ = sign_in(app)  # a second browser keeps its own session
    browser.post("/signout", {"csrf_token": token}, status=302)
    replay = webtest.TestApp(app)
    replay.set_cookie(auth.SESSION_COOKIE, captured)
    assert replay.get("/admin", status=302).headers["Location"].startswith("/signin")
    replay.get("/api/v1/status", status=401)
    assert other.get("/admin").status_int == 200


def test_sessions_die_when_the_admin_token_changes(datastore, settings):
    first = main.create_app(settings)
    first.settings = settings
    browser, _ = sign_in(first)
    captured = browser.cookies[auth.SESSION_COOKIE]
    for token, status in ((settings.admin_token, 200), ("another-admin-token-4567", 401)):
        later = webtest.TestApp(main.create_app(dataclasses.replace(settings, admin_token=token)))
        later.set_cookie(auth.SESSION_COOKIE, captured)
        later.get("/api/v1/status", status=status)


def test_a_forged_session_cookie_is_refused(app):
    browser, _ = sign_in(app)
    real = browser.cookies[auth.SESSION_COOKIE]
    for value in (real[:-1], real + "0", "x" * len(real), "\u0661" * 20, ""):
        forged = webtest.TestApp(app)
        forged.set_cookie(auth.SESSION_COOKIE, value)
        forged.get("/api/v1/status", status=401)


def attempt(app, remote, token):
    client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": remote})
    form = token_of(client.get("/signin"))
    return client.post("/signin", {"token": token, "csrf_token": form}, status="*")


def test_sign_in_attempts_are_rate_limited_with_growing_delays(app):
    waits = []
    for _ in range(8):
        response = attempt(app, "198.51.100.1", "wrong-token")
        if response.status_int == 429:
            waits.append(int(response.headers["Retry-After"]))
            assert "rate_limited" in response.text
            break
        assert response.status_int == 401
    assert waits, "never throttled"
    blocked = attempt(app, "198.51.100.1", "wrong-token")  # a wrong one waits, without being compared
    assert blocked.status_int == 429 and auth.SESSION_COOKIE not in blocked.headers.get("Set-Cookie", "")
    # The right token is never refused (issue 20): an attacker cannot lock the administrator out.
    assert attempt(app, "198.51.100.1", app.settings.admin_token).status_int == 302
    # The delay grows: the store says when the next attempt is allowed, and it doubles per failure.
    import sessions
    from google.cloud import ndb
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        delays = [sessions.delay_after(n) for n in range(1, 10)]
    assert delays == sorted(delays) and delays[-1] > delays[sessions.FREE_ATTEMPTS]
    # The twin: another address signs in at once.
    assert attempt(app, "198.51.100.2", app.settings.admin_token).status_int == 302


def test_a_successful_sign_in_gives_an_attacker_on_the_address_no_fresh_tries(app):
    for _ in range(sessions_module().FREE_ATTEMPTS + 1):
        assert attempt(app, "198.51.100.3", "wrong-token").status_int == 401
    assert attempt(app, "198.51.100.3", app.settings.admin_token).status_int == 302
    assert attempt(app, "198.51.100.3", "wrong-token").status_int == 429  # (issue 20: no reset to abuse)


def sessions_module():
    import sessions
    return sessions


@pytest.mark.parametrize("token", ["short", "x" * 15, "x" * 16])
def test_a_short_admin_token_is_refused_at_start(datastore, token):
    with pytest.raises(settings_module.SettingsError, match="128 bits"):
        main.create_app(settings_module.from_environ({}, admin_token=token))


@pytest.mark.parametrize("token", ["", "test-admin-token-0123456789"])
def test_a_long_enough_admin_token_starts(datastore, token):
    assert main.create_app(settings_module.from_environ({}, admin_token=token)) is not None


# --- 10. odd input is a typed 4xx, never a 500 -----------------------------------------------------

def test_non_ascii_csrf_token_on_sign_in(app):
    client = webtest.TestApp(app)
    client.get("/signin")
    for token in ("\u00e9t\u00e9", "\u0661\u0662", "\U0001f512"):
        response = client.post("/signin", {"token": app.settings.admin_token, "csrf_token": token}, status=403)
        assert "csrf_failed" in response.text


@pytest.mark.parametrize("address", ["\u00b2", "\u0661", "1\u00b2", "\uff11", "\u0967"])
def test_unicode_digits_are_not_address_ids(app, stored, address):
    from tests.harness.app import admin_client
    admin = admin_client(app)  # Bearer for the API, the session for the page
    address = urllib.parse.quote(address)
    path = "/api/v1/employees/asalieri/addresses/" + address
    assert admin.get(path, status=400).json["error"]["code"] == "invalid_request"
    admin.delete(path, status=400)
    admin.get("/admin/employees/asalieri/addresses/" + address, status=400)
    assert raw_entity() == stored
    assert admin.get(URL).json["address"] == 1  # the twin: ASCII 1 is address 1


@pytest.mark.parametrize("days", ["\u00b2", "99999999999", "-1", "1e3", "\u0661"])
def test_odd_days_on_the_expiry_cron(app, days):
    admin = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {app.settings.admin_token}"})
    response = admin.get("/cron/expiry", {"days": days}, status=400)
    assert response.json["error"]["code"] == "invalid_request"
    assert "expired" in admin.get("/cron/expiry", {"days": "10"}).json


def test_upload_form_with_unicode_digits(app):
    browser, token = sign_in(app)
    response = browser.post("/admin/new", {"csrf_token": token, "employee": "asalieri", "address": "\u00b2",
                                           "port": "\u00b2", "host": "h.example"}, status=400)
    assert "address id" in response.text and raw_entity() is None


# --- HSTS on App Engine -------------------------------------------------------------------------

def test_hsts_on_app_engine_only(gae_app, app):
    for client in (webtest.TestApp(gae_app), webtest.TestApp(gae_app, extra_environ=GAE_ADMIN)):
        for path in ("/", "/healthz", "/admin", "/nothing"):
            assert client.get(path, status="*").headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Strict-Transport-Security" not in webtest.TestApp(app).get("/").headers


def test_cookie_authenticated_answers_carry_the_token(app):
    browser, token = sign_in(app)
    assert browser.get("/api/v1/status").headers["X-CSRF-Token"] == token
    admin = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {app.settings.admin_token}"})
    assert "X-CSRF-Token" not in admin.get("/api/v1/status").headers  # Bearer needs none


# --- found by the every-route fuzz ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["%00", "a%00.css", "%0a", "%7f"])
def test_static_names_with_control_characters_are_404(app, name):
    response = webtest.TestApp(app).get("/static/" + name, status=404)
    assert response.json["error"]["code"] == "not_found"
    webtest.TestApp(app).get("/static/style.css", status=200)


def test_a_token_sent_as_a_file_is_just_wrong(app):
    client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "198.51.100.9"})
    form = token_of(client.get("/signin"))
    response = client.post("/signin", {"csrf_token": form}, upload_files=[("token", "t.txt", b"x")],
                           content_type="multipart/form-data", status=401)
    assert "not the admin token" in response.text
    client.post("/signin", {"csrf_token": form, "token": app.settings.admin_token},
                content_type="multipart/form-data", status=302)


def test_sign_out_over_https_replaces_the_host_cookie(app):
    https = webtest.TestApp(app, extra_environ={"wsgi.url_scheme": "https", "HTTP_HOST": "localhost:443",
                                                "REMOTE_ADDR": "192.0.2.44"})
    form = token_of(https.get("/signin"))
    https.post("/signin", {"token": app.settings.admin_token, "csrf_token": form}, status=302)
    token = token_of(https.get("/admin/new"))
    out = https.post("/signout", {"csrf_token": token}, status=302)
    cleared = [c for c in out.headers.getall("Set-Cookie") if c.startswith("__Host-" + auth.SESSION_COOKIE + "=")]
    assert cleared and "secure" in cleared[0].lower() and "max-age=0" in cleared[0].lower(), cleared
    https.get("/api/v1/status", status=401)


def test_the_daily_cron_purges_ended_sessions(app):
    import datetime

    import sessions
    from google.cloud import ndb
    browser, _ = sign_in(app)
    with ndb.Client().context(cache_policy=False, global_cache_policy=False):
        old, _ = sessions.start("session", "admin", app.settings.admin_token,
                                now=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1))
    admin = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {app.settings.admin_token}"})
    admin.get("/cron/expiry")
    db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
    assert len(list(db.query(kind="Session").fetch())) == 1  # the live one stays
    assert browser.get("/admin").status_int == 200


def test_a_forged_client_address_header_does_not_evade_the_limit(app, gae_app):
    def tries(application, ip_header):
        client = webtest.TestApp(application, extra_environ={"REMOTE_ADDR": "198.51.100.20"})
        form = token_of(client.get("/signin"))
        return client.post("/signin", {"token": "wrong-token", "csrf_token": form},
                           headers={"X-Appengine-User-Ip": ip_header}, status="*").status_int

    # Locally the header is anyone's to send: it is ignored, the socket's address counts.
    statuses = [tries(app, f"203.0.113.{n}") for n in range(6)]
    assert statuses[:4] == [401] * 4 and 429 in statuses[4:], statuses
    # On App Engine the front end sets it (and strips client copies): each address has its own count.
    assert [tries(gae_app, f"203.0.113.{n}") for n in range(6)] == [401] * 6
