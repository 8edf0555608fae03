"""CALL_DEADLINE: no outbound call outlasts it, however the peer dribbles bytes (issue 11.4).

Each dribbling peer would finish well within IO_TIMEOUT per read (so only the overall
deadline can stop it) and finishes after DRIP seconds in all: with a short deadline the call
is a 504 `timeout`, with a long one (the legitimate twin) the same peer's answer arrives whole.
"""

import dataclasses
import json
import select
import socket
import threading
import time

import pytest
import webtest

import main
from tests.harness import pki
import settings as settings_module
from tests.harness.loopback import LoopbackTLSServer
from tests.harness.peers import describe_peer_cert

BASE = "/api/v1/employees/asalieri/addresses/1"
STEPS, STEP = 20, 0.05  # the peers dribble for STEPS * STEP = 1 s in all
SHORT, LONG = 0.3, 20.0  # CALL_DEADLINE below and well above that


@pytest.fixture(scope="module")
def world(run_pki):
    p = run_pki.ours
    return dict(pki=p, server=run_pki.server, client=pki.client_cert(p.clients_ca, "asalieri"))


class DripPeer(LoopbackTLSServer):
    """A TLS server whose answer trickles: `http` (Content-Length then one byte per STEP), `line`
    (an echo line one byte per STEP) or `handshake` (its handshake bytes in small slices per STEP).

    `sent` counts the answer bytes written; `finished` is set as the last piece goes out.
    """

    def __init__(self, server, client_ca_pem=None, kind="http"):
        self.kind = kind
        super().__init__(server, [client_ca_pem] if client_ca_pem is not None else [], threaded=True)
        self.sent, self.finished, self.seen = 0, threading.Event(), None

    def serve(self, conn):
        try:
            if self.kind == "handshake":
                return self._serve_handshake(conn)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            self.seen = describe_peer_cert(tls)
            tls.settimeout(5)
            request = tls.recv(65536)
            if self.kind == "http":
                tls.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {STEPS}\r\n\r\n".encode())
            del request
            for _ in range(STEPS):
                if self.stop.wait(STEP):
                    return
                self.sent += 1
                if self.sent == STEPS:
                    self.finished.set()  # before the last byte leaves: the client may be done at once
                tls.sendall(b"x" if self.kind == "http" or self.sent < STEPS else b"\n")
            tls.recv(1)  # until the client closes
        except OSError:
            pass
        finally:
            conn.close()

    def _serve_handshake(self, conn):
        """Relay to a real TLS server on a socketpair, slicing its handshake into STEPS pieces."""
        ours, theirs = socket.socketpair()
        tls_thread = threading.Thread(target=self._plain_tls, args=(theirs,), daemon=True)
        tls_thread.start()
        try:
            pending, sent_slices = b"", 0
            while not self.stop.is_set():
                ready, _, _ = select.select([conn, ours], [], [], STEP)
                if conn in ready:
                    data = conn.recv(65536)
                    if not data:
                        return
                    ours.sendall(data)
                if ours in ready:
                    data = ours.recv(65536)
                    if not data:
                        return
                    pending += data
                if pending:
                    size = max(1, len(pending) // max(1, STEPS - sent_slices)) if sent_slices < STEPS else len(pending)
                    sent_slices += 1
                    if sent_slices >= STEPS:
                        self.finished.set()
                    conn.sendall(pending[:size])
                    pending = pending[size:]
                    self.sent += size
                    time.sleep(STEP)
        except OSError:
            pass
        finally:
            conn.close()
            ours.close()

    def _plain_tls(self, sock):
        try:
            tls = self.ctx.wrap_socket(sock, server_side=True)
            self.seen = describe_peer_cert(tls)
            tls.settimeout(5)
            tls.recv(1)
        except OSError:
            pass
        finally:
            sock.close()


def app_with(settings, deadline, **extra):
    return webtest.TestApp(main.create_app(dataclasses.replace(settings, call_deadline=deadline, io_timeout=5,
                                                               **extra)),
                           extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})


def store(admin, world, port):
    creds = world["client"]
    admin.put(BASE, json.dumps(dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(),
                                    ca_certs=world["pki"].ca_pem.decode(), host="127.0.0.1", port=port,
                                    server_hostname="localhost")), content_type="application/json")


CALLS = {  # kind -> (peer kind, route, body)
    "request": ("http", "request", {"method": "GET", "path": "/"}),
    "echo": ("line", "echo", {"send": "hello\n"}),
    "handshake": ("handshake", "handshake", {}),
}


@pytest.mark.parametrize("deadline", [SHORT, LONG], ids=["short", "long"])
@pytest.mark.parametrize("call", CALLS)
def test_a_dribbling_peer_cannot_outlast_the_deadline(datastore, settings, world, call, deadline):
    kind, route, body = CALLS[call]
    admin = app_with(settings, deadline)
    with DripPeer(world["server"], world["pki"].ca_pem, kind) as peer:
        store(admin, world, peer.port)
        reply = admin.post(BASE + "/" + route, json.dumps(body), content_type="application/json", status="*")
        if deadline == LONG:
            assert reply.status_int == 200 and reply.json["ok"] is True, reply.text
            assert peer.finished.is_set()
            if call == "request":
                assert reply.json["body"] == "x" * STEPS
            if call == "echo":
                assert reply.json["received"] == "x" * (STEPS - 1) + "\n"
        else:
            assert reply.status_int == 504 and reply.json["error"]["code"] == "timeout", reply.text
            assert "CALL_DEADLINE" in reply.json["error"]["message"]
            assert not peer.finished.is_set()  # we stopped listening before the peer was done


@pytest.mark.parametrize("deadline", [SHORT, LONG], ids=["short", "long"])
def test_fetch_ends_by_the_deadline(datastore, settings, world, tmp_path, deadline):
    ca_file = pki.write_pem(str(tmp_path), "ca.pem", world["pki"].ca_pem)
    admin = app_with(settings, deadline, ca_file=ca_file, allowed_targets="localhost")  # fetch: loopback if named
    with DripPeer(world["server"]) as peer:  # server-only TLS, as fetch speaks
        reply = admin.post("/api/v1/fetch", json.dumps({"url": f"https://localhost:{peer.port}/"}),
                           content_type="application/json", status="*")
        if deadline == LONG:
            assert reply.status_int == 200 and reply.json["body"] == "x" * STEPS, reply.text
        else:
            assert reply.status_int == 504 and reply.json["error"]["code"] == "timeout", reply.text
            assert not peer.finished.is_set()


@pytest.mark.parametrize("value, expected", [(None, 30.0), ("2.5", 2.5)])
def test_call_deadline_setting(value, expected):
    env = {} if value is None else {"CALL_DEADLINE": value}
    assert settings_module.from_environ(env).call_deadline == expected


def test_the_watcher_shuts_a_watched_socket_down_and_leaves_a_closed_deadline_alone():
    from dyncert import calls
    # The premise "the call ended in time" is timing itself: a busy machine may run the watcher before
    # our close() (issue 23). It is checked in the same run (kept.expired right after close) and the
    # attempt repeated with a longer deadline, never asserted on a premise that did not hold.
    for seconds in (0.05, 0.2, 0.8, 3.2):
        watched, peer = socket.socketpair()
        spared, spared_peer = socket.socketpair()
        last, last_peer = socket.socketpair()
        with watched, peer, spared, spared_peer, last, last_peer:
            cut, kept = calls.Deadline(seconds), calls.Deadline(seconds)
            after = calls.Deadline(seconds * 1.2)  # expires after kept: once it fired, the watcher passed kept's time
            cut.watch(watched)
            kept.watch(spared)
            after.watch(last)
            kept.close()  # the call ended in time: its socket (maybe pooled now) is not ours to cut
            if kept.expired:
                continue  # the watcher came first: that was no call ending in time; try a longer one
            watched.settimeout(30)
            assert watched.recv(1) == b""  # shut down by the watcher, though the peer never closed
            assert cut.expired and cut.passed()
            last.settimeout(30)
            assert last.recv(1) == b"" and after.expired  # not a sleep: a busy machine may run the watcher late
            spared_peer.sendall(b"x")
            spared.settimeout(5)
            assert spared.recv(1) == b"x" and not kept.expired
            return
    pytest.fail("the machine never let a call close its deadline before the watcher ran")
