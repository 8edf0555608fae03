"""Issue 20 item 6: non-UTF-8 charsets, raw bytes in query strings and form bodies, odd CSR URIs: 400, never 500.

Every route of handlers/routes.py, anonymous and signed in; no traceback reaches the log.
"""

import json
import logging
import re

import pytest
import webtest

from tests.harness.app import admin_client
from dyncert import csr
from dyncert.errors import InputError
from handlers import routes

SAMPLE = {"employee": "asalieri", "address": "1", "name": "style.css"}
PATHS = [re.sub(r"<(\w+)(:[^>]*)?>", lambda m: SAMPLE.get(m.group(1), "x"), r.template) for r in routes.ROUTES]
CHARSETS = ["latin-1", "iso-8859-1", "utf-7", "nope", "utf-16", "cp1252", "utf-8'"]
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def no_trace(logs):
    assert not [r for r in logs.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not [r for r in logs.records if "unhandled" in r.getMessage()]


def clients(app):
    return {"anonymous": webtest.TestApp(app), "admin": admin_client(app)}


@pytest.mark.parametrize("charset", CHARSETS)
def test_a_form_with_a_non_utf8_charset_is_a_400_on_every_route(app, logs, charset):
    for who, client in clients(app).items():
        for path in PATHS:
            for content_type in (f"{FORM}; charset={charset}", f"multipart/form-data; boundary=x; charset={charset}"):
                response = client.post(path, b"token=\xe9&csrf_token=\xff", headers={"Content-Type": content_type},
                                       expect_errors=True)
                assert response.status_int < 500, (who, path, content_type, response.status)
                assert "Traceback" not in response.text
    no_trace(logs)


@pytest.mark.parametrize("query", ["%FF", "x=%FF", "next=%C0%AF", "q=%ED%A0%80", "days=%FF&x=1", "%FF=1"])
def test_raw_bytes_in_a_query_string_are_a_400_on_every_route(app, logs, query):
    for who, client in clients(app).items():
        for path in PATHS:
            for method in ("GET", "POST"):
                response = client.request(f"{path}?{query}", method=method, expect_errors=True)
                assert response.status_int < 500, (who, method, path, query, response.status)
    no_trace(logs)
    refused = webtest.TestApp(app).get("/signin?next=%FF", status=400)
    assert "invalid_request" in refused.text


@pytest.mark.parametrize("body", [b"token=%FF&csrf_token=x", b"token=\xff\xfe&csrf_token=\xc0\xaf",
                                  b"\xff=1", b"token=%ED%A0%80"])
def test_raw_bytes_in_a_form_body_are_a_400(app, logs, body):
    for client in clients(app).values():
        for path in PATHS:
            response = client.post(path, body, headers={"Content-Type": FORM}, expect_errors=True)
            assert response.status_int < 500, (path, body, response.status)
    no_trace(logs)


def test_the_twin_a_utf8_form_still_posts(app, settings):
    for charset in ("", "; charset=utf-8", "; charset=UTF-8", '; charset="utf-8"'):
        client = webtest.TestApp(app)
        page = client.get("/signin")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        body = f"token={settings.admin_token}&csrf_token={token}&next=%2Fadmin%3Fq%3Dx&note=%C3%A9t%C3%A9"
        response = client.post("/signin", body.encode(), headers={"Content-Type": FORM + charset}, status=302)
        assert response.location == "/admin?q=x"  # UTF-8 text (note=été) in the form is fine
        assert client.get("/admin?q=%C3%A9").status_int == 200  # a UTF-8 query string is fine


@pytest.mark.parametrize("value", ["http://[::1", "http://[", "a://[::1]:99999", "https://x]:1/"])
def test_a_csr_uri_urlsplit_cannot_parse_is_invalid_request(value):
    with pytest.raises(InputError) as e:
        csr.uri(value)
    assert e.value.code == "invalid_request"


def test_a_csr_uri_urlsplit_cannot_parse_is_a_400_through_the_api(admin, logs):
    body = {"key_type": "EC-P256", "subject": {"CN": "x"}, "san": {"uri": ["http://[::1"]}}
    response = admin.post("/api/v1/employees/asalieri/addresses/1/csr", json.dumps(body),
                          content_type="application/json", status=400)
    assert response.json["error"]["code"] == "invalid_request"
    ok = dict(body, san={"uri": ["https://[::1]/x"]})  # the twin: a bracketed literal that parses
    assert admin.post("/api/v1/employees/asalieri/addresses/1/csr", json.dumps(ok),
                      content_type="application/json", status="*").status_int < 500
    no_trace(logs)


@pytest.mark.parametrize("charset", ["latin-1", "utf-7", "nope"])
def test_a_form_body_on_a_get_is_checked_too(app, logs, charset):
    """WebOb parses a form body whatever the method: a GET carrying one in another charset is a 400 too."""
    for who, client in clients(app).items():
        for path in PATHS:
            for content_type in (f"{FORM}; charset={charset}", f"multipart/form-data; boundary=zz; charset={charset}"):
                body = b'--zz\r\nContent-Disposition: form-data; name="x"\r\n\r\n\xe9\r\n--zz--\r\n' \
                    if content_type.startswith("multipart") else b"x=\xe9"
                response = client.request(path, method="GET", body=body, headers={"Content-Type": content_type},
                                          expect_errors=True)
                assert response.status_int < 500, (who, path, content_type, response.status)
    no_trace(logs)


def test_raw_unencoded_bytes_in_a_query_string_are_a_400(app, logs):
    """Bytes a WSGI server passes as they came (latin-1), not percent-encoded; error pages render too."""
    for who, client in clients(app).items():
        for path in PATHS:
            request = webtest.TestRequest.blank(path)
            request.environ["QUERY_STRING"] = "days=\x80&next=\xff"
            response = client.do_request(request, status=None, expect_errors=True)
            assert response.status_int < 500, (who, path, response.status)
    no_trace(logs)
