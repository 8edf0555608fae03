"""Keys generated here never leave the seal: not in a response, page, download, log line, temp file,
nor in clear in the raw Datastore entity of a pending key.
"""

import json
import logging
import os
import threading
import time

import pytest
import webtest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from google.cloud import datastore as raw_datastore

import main
from tests.harness import pki
from tests.harness.app import ADMIN_TOKEN, token_of
from dyncert import csr
from tests.harness.peers import PythonTLSPeer
from tests.harness.leaks import Scanner, scan_temp, secret_lines
from tests.harness.pki import sign_csr

API = "/api/v1/employees/asalieri/addresses/{}"
PAGE = "/admin/employees/asalieri/addresses/{}"


@pytest.fixture
def generated(monkeypatch):
    """Every key dyncert.csr generates during the test (a spy on the real generator, for the needles)."""
    keys = []
    real = csr.generate_key

    def spy(name=csr.DEFAULT_KEY_TYPE):
        key = real(name)
        keys.append(key)
        return key

    monkeypatch.setattr(csr, "generate_key", spy)
    return keys


def flatten(value):
    """Every stored value of a raw entity as bytes, embedded entities and lists included."""
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, dict):  # an Entity is a dict
        for item in value.values():
            yield from flatten(item)
    elif isinstance(value, list):
        for item in value:
            yield from flatten(item)
    else:
        yield repr(value).encode()


def needles_of(key):
    """Text and bytes that would reveal a private key: PEM lines, a DER slice, the raw private value."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.private_numbers().private_value.to_bytes((key.curve.key_size + 7) // 8, "big")
    elif isinstance(key, rsa.RSAPrivateKey):
        raw = key.private_numbers().d.to_bytes((key.key_size + 7) // 8, "big")
    else:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    return secret_lines(pem), [der, der[-40:], raw, pem]


def test_generated_keys_appear_nowhere(datastore, settings, generated, caplog):
    caplog.set_level(logging.DEBUG)
    started = time.time() - 1
    p = pki.make_pki("lifecycle secrets")
    server, first = pki.server_cert(p.root), pki.client_cert(p.clients_ca, "first")
    app = main.create_app(settings)
    api = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {ADMIN_TOKEN}"})
    browser = webtest.TestApp(app)
    signin = browser.get("/admin").follow()
    browser.post("/signin", {"token": ADMIN_TOKEN, "csrf_token": token_of(signin), "next": "/admin"}, status=302)
    responses = []

    def keep(response):
        responses.append((response.request.method + " " + response.request.path, response))
        return response

    stop, seen_files, temp_texts = threading.Event(), set(), []

    class Collect:  # the temp scan runs before the needles are known: collect, check at the end
        seen = 0

        def check(self, text, where):
            temp_texts.append((text, where))

    def watch():
        while not stop.is_set():
            scan_temp(Collect(), started, seen_files)
            stop.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with PythonTLSPeer(server, p.ca_pem) as peer:
        body = dict(cert=first.cert_pem.decode(), key=first.key_pem.decode(), ca_certs=p.ca_pem.decode(),
                    host="127.0.0.1", port=peer.port, server_hostname="localhost")
        for address, key_type in enumerate(csr.KEY_TYPES, 1):
            url = API.format(address)
            keep(api.put(url, json.dumps(body), content_type="application/json", status=201))
            made = keep(api.post(url + "/csr", json.dumps({"key_type": key_type, "subject": {"CN": f"k{address}"}}),
                                 content_type="application/json", status=201)).json
            keep(api.get(url + "/csr"))
            keep(api.get(url))
            keep(browser.get(PAGE.format(address)))
            keep(browser.get(PAGE.format(address) + "/csr"))
            # Raw entity of the pending key: ciphertext only.
            db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
            raw = db.get(db.key("Employee", "asalieri", "Address", address))
            raw_bytes = b"".join(flatten(raw))
            assert isinstance(raw["pending"]["sealed_key"], bytes)  # an embedded entity: its blobs are checked too
            lines, blobs = needles_of(generated[-1])
            for needle in blobs:
                assert needle not in raw_bytes, key_type
            for line in lines:
                assert line.encode() not in raw_bytes, key_type
            assert b"PRIVATE KEY" not in raw_bytes
            chain = sign_csr(p.clients_ca, made["csr"])
            keep(api.put(url + "/next", json.dumps({"cert": chain}), content_type="application/json", status=201))
            keep(api.post(url + "/next/handshake"))
            keep(browser.post(PAGE.format(address) + "/next/test", {"csrf_token": token_of(browser.get(PAGE.format(address)))}))
            keep(api.post(url + "/promote"))
            keep(api.post(url + "/request", json.dumps({"path": "/"}), content_type="application/json"))
            keep(browser.get(PAGE.format(address) + "/rollback"))
            keep(api.post(url + "/rollback"))
            keep(api.get(url + "/history"))
            keep(api.put(url + "/next", json.dumps({"cert": chain}), content_type="application/json", status=409))
        keep(api.get("/api/v1/identities"))
        keep(api.get("/cron/expiry"))
        keep(browser.get("/admin"))
    stop.set()
    watcher.join()
    scan_temp(Collect(), started, seen_files)

    assert len(generated) == len(csr.KEY_TYPES)
    lines, blobs = [], []
    for key in generated:
        key_lines, key_blobs = needles_of(key)
        lines += key_lines
        blobs += key_blobs
    scanner = Scanner(lines)
    for where, response in responses:
        scanner.response(response, where)
        for blob in blobs:
            assert blob not in response.body, where
    for text, where in temp_texts:
        scanner.check(text, where)
    for record in caplog.records:
        scanner.check(record.getMessage(), f"log {record.name}")
    scanner.check(caplog.text, "captured log")
    assert any("outbound_call" in r.getMessage() for r in caplog.records)
    assert scanner.seen > 100
