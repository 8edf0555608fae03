"""Auth and protection: every non-public route refuses anonymous callers; sessions; CSRF."""

import re

import pytest

from handlers import auth, routes

SAMPLE = {"employee": "asalieri", "address": "1", "name": "style.css"}


def concrete(template):
    """A route template with its variables filled in."""
    return re.sub(r"<(\w+)(:[^>]*)?>", lambda m: SAMPLE.get(m.group(1), "x"), template)


def every_route():
    for route in routes.ROUTES:
        yield route.template, concrete(route.template)


@pytest.mark.parametrize("template,path", list(every_route()))
def test_non_public_routes_refuse_anonymous_requests(client, template, path):
    public = path in ("/", "/healthz", "/signin", "/favicon.ico") or path.startswith("/static/")
    for method in ("GET", "POST", "PUT", "DELETE"):
        response = client.request(path, method=method, expect_errors=True)
        if public:
            continue
        assert response.status_int in (302, 303, 401, 404, 405), (method, path, response.status)
        if response.status_int in (302, 303):
            assert response.location.split("?")[0].endswith("/signin")
        assert "PRIVATE KEY" not in response.text


def test_session_round_trip(ndb_context, settings):
    import sessions
    session_id, record = sessions.start("session", "admin", settings.admin_token)
    assert sessions.lookup(session_id, settings.admin_token).csrf == record.csrf
    assert sessions.lookup(session_id, "another-admin-token") is None
    assert sessions.lookup(session_id[:-1] + ("A" if session_id[-1] != "A" else "B"), settings.admin_token) is None
    assert sessions.lookup("", settings.admin_token) is None
    sessions.end(session_id)
    assert sessions.lookup(session_id, settings.admin_token) is None


def test_sign_in_sets_a_strict_http_only_cookie(client, settings):
    form = client.get("/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    bad = client.post("/signin", {"token": "wrong", "csrf_token": token, "next": "/admin"}, status=401)
    assert "not the admin token" in bad.text
    ok = client.post("/signin", {"token": settings.admin_token, "csrf_token": token,
                                 "next": "/api/v1/status"}, status=302)
    cookie = [v for k, v in ok.headerlist if k == "Set-Cookie" and v.startswith(auth.SESSION_COOKIE)][0]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert client.get("/api/v1/status").json["identities"] == 0


def test_sign_in_without_csrf_is_refused(client, settings):
    response = client.post("/signin", {"token": settings.admin_token}, status=403)
    assert auth.SESSION_COOKIE not in response.headers.get("Set-Cookie", "")


def test_sign_in_never_redirects_off_site(client, settings):
    form = client.get("/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    response = client.post("/signin", {"token": settings.admin_token, "csrf_token": token,
                                       "next": "//evil.example/"}, status=302)
    assert response.location.endswith("/admin")
