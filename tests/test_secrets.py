"""Secrets hygiene: no key material or password in any response, log line, page or temp file; only
ciphertext at rest; cookie flags, CSRF on every form, security headers on every response.
"""

import base64
import dataclasses
import json
import logging
import os
import re
import tempfile
import threading
import time

import pytest
import webtest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from google.cloud import datastore as raw_datastore

import main
from tests.harness import pki
from dyncert import context
from dyncert.identity import ClientIdentity
from handlers import auth, base, routes
from tests.harness.app import token_of
from tests.harness.browser import signed_in
from tests.harness.leaks import Scanner, scan_temp, secret_lines
from tests.harness.peers import PythonTLSPeer

KEY_PASSWORD = "k3y-pa55word-never-shown-1"
P12_PASSWORD = "p12-pa55word-never-shown-2"
BASE = "/api/v1/employees/asalieri/addresses/{}"


def sealed_file_activity():
    """mtime (ns) of this process's private dyncert-<pid>-* directories: a sealed file written or unlinked changes it."""
    top, prefix = tempfile.gettempdir(), f"dyncert-{os.getpid()}-"
    with os.scandir(top) as entries:
        return {e.path: e.stat(follow_symlinks=False).st_mtime_ns for e in entries
                if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)}


@pytest.fixture(scope="module")
def world(run_pki):
    """Client keys made in memory for this module only (never written anywhere by the tests)."""
    p = run_pki.ours
    clients = [pki.client_cert(p.clients_ca, f"secret{i}") for i in range(3)]
    return dict(pki=p, server=run_pki.server, clients=clients)


def test_no_key_material_in_responses_logs_pages_or_temp_files(datastore, settings, world, caplog):
    caplog.set_level(logging.DEBUG)  # the whole app, every logger, at DEBUG
    started = time.time() - 1
    sealed_before = sealed_file_activity()
    a, b, c = world["clients"]
    needles = [KEY_PASSWORD, P12_PASSWORD] + [line for cr in world["clients"] for line in secret_lines(cr.key_pem)]
    scanner = Scanner(needles)
    seen_files = set()
    stop = threading.Event()
    errors = []

    def watch():  # scans the temp dirs while uploads and calls run
        while not stop.is_set():
            try:
                scan_temp(scanner, started, seen_files)
            except AssertionError as e:
                errors.append(e)
            stop.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    app = main.create_app(settings)
    api = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
    ca = world["pki"].ca_pem.decode()
    key_a = serialization.load_pem_private_key(a.key_pem, None)
    encrypted = key_a.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(KEY_PASSWORD.encode())).decode()
    chain_b = [x509.load_pem_x509_certificate(p) for p in re.findall(
        rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", b.cert_pem, re.S)]
    p12 = base64.b64encode(pkcs12.serialize_key_and_certificates(
        b"b", serialization.load_pem_private_key(b.key_pem, None), chain_b[0], chain_b[1:],
        serialization.BestAvailableEncryption(P12_PASSWORD.encode()))).decode()

    with PythonTLSPeer(world["server"], world["pki"].ca_pem, mode="https") as https, \
            PythonTLSPeer(world["server"], world["pki"].ca_pem, mode="echo") as echo:
        target = dict(ca_certs=ca, host="127.0.0.1", server_hostname="localhost")
        bodies = {
            1: dict(target, cert=a.cert_pem.decode(), key=encrypted, key_password=KEY_PASSWORD, port=https.port),
            2: dict(target, pkcs12=p12, pkcs12_password=P12_PASSWORD, port=echo.port),
            3: dict(target, cert=c.cert_pem.decode(), key=c.key_pem.decode(), port=https.port),
        }
        bad = [dict(bodies[1], key_password="wrong " + KEY_PASSWORD), dict(bodies[1], key_password=None),
               dict(bodies[2], pkcs12_password=P12_PASSWORD + "x"), dict(bodies[3], key=a.key_pem.decode()),
               dict(bodies[3], host=c.key_pem.decode()), dict(bodies[3], server_hostname=c.key_pem.decode()),
               dict(bodies[3], cert=c.key_pem.decode()), dict(bodies[3], ca_certs=c.key_pem.decode())]
        for address, body in bodies.items():
            scanner.response(api.put(BASE.format(address), json.dumps(body), content_type="application/json"),
                             "PUT")
        for body in bad:
            scanner.response(api.put(BASE.format(3), json.dumps(body), content_type="application/json",
                                     status=400), "bad PUT")
        scanner.response(api.put(BASE.format(3), '{"key": "' + KEY_PASSWORD + '", ', content_type="application/json",
                                 status=400), "malformed PUT")
        for address in (1, 3):
            scanner.response(api.post(BASE.format(address) + "/handshake"), "handshake")
            reply = scanner.response(api.post(BASE.format(address) + "/request",
                                              json.dumps({"method": "POST", "path": "/x", "body": "hi"}),
                                              content_type="application/json"), "request")
            assert reply.json["status"] == 200
        assert scanner.response(api.post(BASE.format(2) + "/echo", json.dumps({"send": "hey\n"}),
                                         content_type="application/json"), "echo").json["received"] == "hey\n"
        for url in ("/api/v1/identities", BASE.format(1), BASE.format(2), "/api/v1/status", "/cron/expiry"):
            scanner.response(api.get(url), url)

        # The pages, through a signed-in browser (session cookie), including the upload form after errors.
        browser, token = signed_in(app, settings.admin_token)
        form = scanner.response(browser.get("/admin/new"), "upload form")
        fields = {"employee": "asalieri", "address": "4", "cert": a.cert_pem.decode(), "key": encrypted,
                  "key_password": KEY_PASSWORD, "ca_certs": ca, "host": "127.0.0.1", "port": str(https.port),
                  "server_hostname": "localhost", "tls_version": "TLS", "csrf_token": token}
        assert form.status_int == 200
        for changes in ({"key_password": "nope"}, {"host": c.key_pem.decode()}, {"cert": c.key_pem.decode()},
                        {"ca_certs": c.key_pem.decode()}, {"employee": c.key_pem.decode()}):
            page = browser.post("/admin/new", dict(fields, **changes), content_type="multipart/form-data", status=400)
            scanner.response(page, f"upload form with {sorted(changes)} wrong")
        page = browser.post("/admin/new", fields, upload_files=[("keyfile", "k.pem", c.key_pem)],
                            content_type="multipart/form-data", status=400)  # key in both text and file
        scanner.response(page, "upload form with a key file")
        scanner.response(browser.post("/admin/new", fields, content_type="multipart/form-data", status=303), "upload")
        for url in ("/admin", "/admin/employees/asalieri/addresses/4", "/admin/employees/asalieri/addresses/2",
                    "/admin/employees/asalieri/addresses/4/delete", "/"):
            scanner.response(browser.get(url), url)
        for suffix, extra in (("/test", {}), ("/request", {"method": "GET", "path": "/", "headers": "X-A: 1"}),
                              ("/echo", {"send": "hello"})):
            address = 2 if suffix == "/echo" else 4
            scanner.response(browser.post(f"/admin/employees/asalieri/addresses/{address}{suffix}",
                                          dict(extra, csrf_token=token)), suffix)

    stop.set()
    watcher.join()
    scan_temp(scanner, started, seen_files)
    assert not errors, errors[0]
    if context.memfd_available() or context.pipe_available():
        # memfd (3.11, 3.13) or pipes (the Cloud CLI's 3.12): no key touched a file system, not even sealed.
        assert sealed_file_activity() == sealed_before
    for record in caplog.records:
        scanner.check(record.getMessage(), f"log {record.name}")
        if record.exc_info:
            scanner.check(logging.Formatter().formatException(record.exc_info), f"log traceback {record.name}")
    scanner.check(caplog.text, "captured log")
    assert any("outbound_call" in r.getMessage() for r in caplog.records)  # the logs were really captured
    assert scanner.seen > 60


def test_sealed_file_activity_sees_the_temp_file_tier(world, monkeypatch):
    """The twin of the check above: with memfd and pipes off, the sealed file shows in the directory's mtime."""
    monkeypatch.setattr(context, "MEMFD_ENABLED", False)
    monkeypatch.setattr(context, "PIPE_ENABLED", False)
    client = world["clients"][0]
    identity = ClientIdentity.from_pem(client.cert_pem, client.key_pem)
    context.client_context(identity)  # the private directory exists from here on
    before = sealed_file_activity()
    time.sleep(0.05)  # past the file system's timestamp granularity (a kernel tick)
    context.client_context(identity)
    after = sealed_file_activity()
    assert after.keys() == before.keys() and after != before


def test_raw_entities_hold_only_ciphertext(admin, world):
    a = world["clients"][0]
    body = dict(cert=a.cert_pem.decode(), key=a.key_pem.decode(), host="peer.example.com")
    admin.put(BASE.format(1), json.dumps(body), content_type="application/json", status=201)
    db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
    entity = db.get(db.key("Employee", "asalieri", "Address", 1))
    key = serialization.load_pem_private_key(a.key_pem, None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    for name, value in entity.items():
        raw = value if isinstance(value, bytes) else str(value).encode()
        for secret in (der, scalar, a.key_pem, der[-40:]):
            assert secret not in raw, name
        for line in secret_lines(a.key_pem):
            assert line.encode() not in raw, name
    assert "PRIVATE KEY" not in json.dumps({k: v for k, v in entity.items() if isinstance(v, str)})
    sealed = entity["sealed_key"]
    assert isinstance(sealed, bytes) and len(sealed) >= len(der) + 12 + 16  # nonce + tag: AES-GCM


# --- cookies and CSRF -----------------------------------------------------------------------------

def set_cookies(response):
    return [v for k, v in response.headerlist if k.lower() == "set-cookie"]


@pytest.mark.parametrize("secure", [False, True])
def test_cookie_flags(datastore, settings, secure):
    client = webtest.TestApp(main.create_app(dataclasses.replace(settings, secure_cookies=secure)),
                             extra_environ={"wsgi.url_scheme": "https", "HTTPS": "on"} if secure else None)
    form = client.get("/signin")
    csrf_cookie = [c for c in set_cookies(form) if c.startswith(auth.cookie_name(auth.CSRF_COOKIE, secure))][0]
    token = token_of(form)
    response = client.post("/signin", {"token": settings.admin_token, "csrf_token": token, "next": "/admin"},
                           status=302)
    session = [c for c in set_cookies(response) if c.startswith(auth.cookie_name(auth.SESSION_COOKIE, secure))][0]
    for cookie in (csrf_cookie, session):
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags, cookie
        assert ("secure" in flags) is secure, cookie
    assert settings.admin_token not in session


def page_post_routes():
    """Every route whose handler takes a form POST (PageHandler subclasses with post())."""
    sample = {"employee": "asalieri", "address": "1"}
    for route in routes.ROUTES:
        handler = route.handler
        if isinstance(handler, type) and issubclass(handler, base.PageHandler) and hasattr(handler, "post"):
            yield re.sub(r"<(\w+)(:[^>]*)?>", lambda m: sample.get(m.group(1), "x"), route.template)


def test_every_form_post_needs_the_csrf_token(datastore, settings, world, upload):
    app = main.create_app(settings)
    api = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
    api.put(BASE.format(1), json.dumps(upload), content_type="application/json", status=201)
    db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
    key = db.key("Employee", "asalieri", "Address", 1)
    before = dict(db.get(key))
    paths = list(page_post_routes())
    assert {"/signin", "/signout", "/admin/new", "/admin/employees/asalieri/addresses/1/delete",
            "/admin/employees/asalieri/addresses/1/test"} <= set(paths), paths
    browser, real = signed_in(app, settings.admin_token)  # the forged forms lack this token
    fields = {"employee": "asalieri", "address": "1", "cert": upload["cert"], "key": upload["key"],
              "host": "peer.example.com", "port": "9443", "token": settings.admin_token, "send": "x",
              "method": "GET", "path": "/"}
    for path in paths:
        for token in (None, "", "forged-" + real, real[:-1]):
            params = dict(fields) if token is None else dict(fields, csrf_token=token)
            response = browser.post(path, params, status="*")
            assert response.status_int == 403, (path, token, response.status)
            assert "csrf_failed" in response.text
            assert not [c for c in set_cookies(response) if c.startswith(auth.SESSION_COOKIE)]  # no sign-in/out
    assert dict(db.get(key)) == before
    assert browser.get("/admin").status_int == 200  # still signed in: signout without a token did nothing


# --- security headers on every response -------------------------------------------------------------

def assert_security_headers(response, where):
    csp = response.headers.get("Content-Security-Policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert "script-src" in directives or "default-src" in directives, where
    script = directives.get("script-src", directives.get("default-src"))
    assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script, where
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", where
    assert response.headers.get("X-Content-Type-Options") == "nosniff", where
    assert response.headers.get("Referrer-Policy"), where


def test_security_headers_on_every_response(datastore, settings, upload):
    app = main.create_app(settings)
    anonymous = webtest.TestApp(app)
    admin = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
    admin.put(BASE.format(1), json.dumps(upload), content_type="application/json", status=201)
    sample = {"employee": "asalieri", "address": "1", "name": "style.css"}
    paths = [re.sub(r"<(\w+)(:[^>]*)?>", lambda m: sample.get(m.group(1), "x"), r.template) for r in routes.ROUTES]
    paths += ["/no/such/page", "/api/v1/employees/%FF/addresses/1", "/api/v1/employees/bad%20id/addresses/1",
              "/static/../main.py", "/admin/employees/asalieri/addresses/999"]
    count = 0
    for client in (anonymous, admin):
        for path in paths:
            for method in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"):
                # (a cookie-less client for the non-UTF-8 path: webtest's cookie jar cannot parse it)
                agent = webtest.TestApp(app, extra_environ=client.extra_environ) if "%FF" in path else client
                response = agent.request(path, method=method, status="*")
                assert response.status_int < 500 or response.status_int in (502, 503, 504), (method, path)
                assert_security_headers(response, f"{method} {path} -> {response.status}")
                count += 1
    assert count > 100
