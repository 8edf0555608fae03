"""Faults: Datastore going away and coming back, misbehaving peers, a write killed half-way."""

import dataclasses
import json
import os
import socket
import struct
import threading
import time

import pytest
import webtest
from google.api_core import exceptions as gexc
from google.cloud import datastore as raw_datastore
from google.cloud import ndb

import main
import models
from tests.harness import pki
from devserver.emulator import Emulator
from tests.harness.peers import PythonTLSPeer

BASE = "/api/v1/employees/asalieri/addresses/1"


def bearer(app, settings):
    return webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})


def put(admin, body, url=BASE, status="*"):
    return admin.put(url, json.dumps(body), content_type="application/json", status=status)


def raw_snapshot(employee="asalieri", address=1):
    db = raw_datastore.Client(project=os.environ["DATASTORE_PROJECT_ID"])
    key = db.key("Employee", employee, "Address", address)
    parent, entity = db.get(key.parent), db.get(key)
    return (dict(parent) if parent is not None else None, dict(entity) if entity is not None else None)


# --- Datastore outage -------------------------------------------------------------------------

def assert_storage_unavailable(response):
    assert response.status_int == 503, (response.status, response.text[:300])
    assert response.json["error"]["code"] == "storage_unavailable"
    assert response.headers["Retry-After"].isdigit()
    assert "Traceback" not in response.text


@pytest.mark.slow
def test_datastore_outage_answers_503_then_recovers(settings, upload, tmp_path, monkeypatch):
    """A separate emulator (kept on disk, so data survives) is stopped, then restarted on the same port.

    With the emulator down, each request fails after ndb's own retries (3 retries with exponential
    backoff: about 4-14 s measured), well inside gunicorn's 60 s timeout of app.yaml.
    """
    emu = Emulator(data_dir=str(tmp_path / "datastore")).start()
    try:
        for name, value in emu.environ("dyncert-faults").items():
            monkeypatch.setenv(name, value)
        app = main.create_app(settings)
        app.client  # made now, while the environment points at this emulator
        admin = bearer(app, settings)
        created = put(admin, upload, status=201).json
        assert admin.get(BASE).json == created

        emu.stop()
        started = time.monotonic()
        assert_storage_unavailable(admin.get(BASE, status="*"))
        print(f"storage outage: a GET failed after {time.monotonic() - started:.1f} s")
        assert_storage_unavailable(put(admin, dict(upload, port=9443)))
        assert_storage_unavailable(admin.post(BASE + "/handshake", status="*"))
        assert_storage_unavailable(admin.get("/api/v1/identities", status="*"))
        assert admin.get("/healthz").text == "ok"  # liveness needs no storage

        emu = Emulator(port=emu.port, data_dir=str(tmp_path / "datastore")).start()
        deadline = time.monotonic() + 90
        while True:  # gRPC reconnects with backoff: the first requests after the restart may still fail
            response = admin.get(BASE, status="*")
            if response.status_int == 200 or time.monotonic() > deadline:
                break
            assert_storage_unavailable(response)
        assert response.status_int == 200 and response.json == created  # nothing lost, nothing half-written
        replaced = put(admin, dict(upload, port=9443), status=200).json
        assert replaced["port"] == 9443 and admin.get(BASE).json == replaced
    finally:
        emu.stop()


def test_storage_error_inside_the_write_is_503_and_writes_nothing(admin, upload, monkeypatch):
    before = raw_snapshot()
    assert before == (None, None)
    original = ndb.Model.put

    def flaky(self, *args, **kwargs):
        if isinstance(self, models.Address):
            raise gexc.ServiceUnavailable("injected: datastore went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ndb.Model, "put", flaky)
    assert_storage_unavailable(put(admin, upload))
    assert raw_snapshot() == (None, None)


# --- a request killed mid-write ------------------------------------------------------------------

def test_crash_between_employee_and_address_put_leaves_nothing(admin, upload, monkeypatch):
    """An exception after Employee.put() and before Address.put() rolls the whole transaction back."""
    calls = []
    original = models.Address.put

    def crash(self, *args, **kwargs):
        calls.append(self.key)
        raise RuntimeError("injected crash in the middle of the write")

    monkeypatch.setattr(models.Address, "put", crash)
    response = put(admin, upload, url="/api/v1/employees/newbie/addresses/7")
    assert response.status_int == 500 and response.json["error"]["code"] == "internal_error"
    assert "Traceback" not in response.text and "injected" not in response.text
    assert calls, "the crash was not reached"
    assert raw_snapshot("newbie", 7) == (None, None)  # no orphan Employee, no Address

    monkeypatch.setattr(models.Address, "put", original)
    put(admin, upload, status=201)
    before = raw_snapshot()
    monkeypatch.setattr(models.Address, "put", crash)
    put(admin, dict(upload, port=9443), status=500)
    assert raw_snapshot() == before  # the previous record, byte for byte
    monkeypatch.setattr(models.Address, "put", original)
    assert admin.get(BASE).json["port"] == upload["port"]


def test_crash_during_delete_keeps_the_record(admin, upload, monkeypatch):
    put(admin, upload, status=201)
    before = raw_snapshot()

    def crash(self, *args, **kwargs):
        raise RuntimeError("injected crash during delete")

    monkeypatch.setattr(ndb.Key, "delete", crash)
    assert admin.delete(BASE, status="*").status_int == 500
    assert raw_snapshot() == before


# --- misbehaving peers ---------------------------------------------------------------------------

class FaultProxy:
    """A loopback TCP proxy in front of a real TLS peer that misbehaves on the server-to-client side.

    reset_after_server_hello: forward the first TLS record (the ServerHello), then RST.
    stall_after: forward `n` bytes of the server's answer, then send nothing more (keep the socket open).
    drip: forward the server's bytes one at a time, `gap` seconds apart.
    """

    def __init__(self, upstream_port, mode, n=0, gap=0.0):
        self.upstream_port, self.mode, self.n, self.gap = upstream_port, mode, n, gap
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.sockets = []
        self.forwarded = []  # bytes forwarded to the client, per connection

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            if self.mode == "reset_after_server_hello":  # one thread: the RST must not wait on a recv
                upstream.sendall(client.recv(65536))  # the ClientHello
            else:
                threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._back, args=(upstream, client), daemon=True).start()

    def _pipe(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def _back(self, upstream, client):
        sent = 0
        try:
            if self.mode == "reset_after_server_hello":
                header = self._exactly(upstream, 5)
                body = self._exactly(upstream, struct.unpack("!H", header[3:5])[0])
                assert header[0] == 22 and body[0] == 2, "expected a ServerHello record"
                client.sendall(header + body)
                self.forwarded.append(len(header + body))
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()  # RST, in the middle of the handshake
                return
            while data := upstream.recv(65536):
                for i in range(len(data)):
                    if self.mode == "stall_after" and sent >= self.n:
                        self.stop.wait()
                        return
                    client.sendall(data[i:i + 1])
                    sent += 1
                    if self.gap:
                        time.sleep(self.gap)
        except OSError:
            pass
        finally:
            self.forwarded.append(sent)

    @staticmethod
    def _exactly(sock, n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("upstream closed")
            data += chunk
        return data


@pytest.fixture(scope="module")
def world(run_pki):
    p = run_pki.ours
    return dict(pki=p, server=run_pki.server, client=pki.client_cert(p.clients_ca, "asalieri"))


def store(admin, world, port):
    body = dict(cert=world["client"].cert_pem.decode(), key=world["client"].key_pem.decode(),
                ca_certs=world["pki"].ca_pem.decode(), host="127.0.0.1", port=port, server_hostname="localhost")
    put(admin, body, status="*").status_int in (200, 201) or pytest.fail("store failed")


def remote(admin, kind, body=None):
    response = admin.post(f"{BASE}/{kind}", json.dumps(body or {}), content_type="application/json", status="*")
    assert response.status_int in (502, 504), (response.status, response.text[:300])
    data = response.json
    assert data["ok"] is False and data["error"]["message"] and "Traceback" not in response.text
    return response.status_int, data["error"]["code"]


@pytest.fixture
def fast(datastore, settings):
    """The app with short timeouts (a stalled peer costs half a second, not ten)."""
    return bearer(main.create_app(dataclasses.replace(settings, connect_timeout=1, io_timeout=0.5)), settings)


@pytest.mark.parametrize("kind", ["handshake", "request", "echo"])
def test_reset_right_after_server_hello_is_connection_reset(fast, world, kind):
    mode = "echo" if kind == "echo" else "https"
    with PythonTLSPeer(world["server"], world["pki"].ca_pem, mode=mode) as peer, \
            FaultProxy(peer.port, "reset_after_server_hello") as proxy:
        store(fast, world, proxy.port)
        assert remote(fast, kind, {"send": "hi\n"} if kind == "echo" else None) == (502, "connection_reset")
        assert proxy.forwarded and proxy.forwarded[0] > 0  # the ServerHello did reach us


@pytest.mark.parametrize("n", [1, 5, 100])
def test_peer_that_stalls_mid_handshake_times_out(fast, world, n):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer, FaultProxy(peer.port, "stall_after", n=n) as proxy:
        store(fast, world, proxy.port)
        assert remote(fast, "handshake") == (504, "timeout")


def test_slow_drip_peer_times_out_and_a_byte_by_byte_peer_completes(fast, world):
    """A peer dripping its handshake: CPython bounds the whole do_handshake() by the socket timeout
    (one deadline, not one per read), so a drip slower than io_timeout overall is a 504 timeout even
    though every single byte arrives well inside it; the same peer sending byte by byte at full
    speed completes with the right certificate presented.
    """
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        with FaultProxy(peer.port, "drip", gap=0.005) as slow:  # ~1-2 KiB flight: 5-10 s at 5 ms a byte
            store(fast, world, slow.port)
            assert remote(fast, "handshake") == (504, "timeout")
        with FaultProxy(peer.port, "drip", gap=0) as quick:
            store(fast, world, quick.port)
            response = fast.post(BASE + "/handshake", status="*")
            assert response.status_int == 200, response.text[:300]
            assert response.json["client_fingerprint_sha256"] == world["client"].fingerprint_sha256


def test_silent_peer_and_echo_without_newline_time_out(fast, world):
    with PythonTLSPeer(mode="silent") as silent:
        store(fast, world, silent.port)
        for kind in ("handshake", "request", "echo"):
            assert remote(fast, kind) == (504, "timeout"), kind
    with PythonTLSPeer(world["server"], world["pki"].ca_pem, mode="echo") as peer:
        store(fast, world, peer.port)
        assert remote(fast, "echo", {"send": "no newline"}) == (504, "timeout")


@pytest.mark.parametrize("mode,code", [("reset", "connection_reset"), ("garbage", "handshake_failed")])
def test_reset_and_garbage_peers_on_every_call_kind(fast, world, mode, code):
    with PythonTLSPeer(mode=mode) as peer:
        store(fast, world, peer.port)
        for kind in ("handshake", "request", "echo"):
            assert remote(fast, kind) == (502, code), kind


def test_peer_that_goes_down_between_calls(fast, world):
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        store(fast, world, peer.port)
        assert fast.post(BASE + "/handshake").json["ok"] is True
        port = peer.port
    assert remote(fast, "handshake") == (502, "connection_refused")
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as again:  # a new port: store it, works again
        store(fast, world, again.port)
        assert fast.post(BASE + "/handshake").json["ok"] is True
    assert port
