""".../request refuses framing and hop-by-hop headers and control characters (issue 11.9).

A real TLS peer records every byte it receives: a refused request leaves it untouched (no
connection at all), an ordinary one arrives with its custom headers intact.
"""

import json

import pytest

from tests.harness import pki
from tests.harness.loopback import LoopbackTLSServer

BASE = "/api/v1/employees/asalieri/addresses/1"


class RecordingPeer(LoopbackTLSServer):
    """A TLS server (client certificate required) that keeps the raw bytes of each request and answers 200."""

    def __init__(self, server, client_ca_pem):
        super().__init__(server, [client_ca_pem])
        self.received, self.accepted = [], 0

    def serve(self, conn):
        self.accepted += 1
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:  # read it all: closing with unread bytes would send a reset
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.received.append(data)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except OSError:
            pass


@pytest.fixture(scope="module")
def world(run_pki):
    p = run_pki.ours
    return dict(pki=p, server=run_pki.server, client=pki.client_cert(p.clients_ca, "asalieri"))


@pytest.fixture
def peer(admin, world):
    with RecordingPeer(world["server"], world["pki"].ca_pem) as recording:
        creds = world["client"]
        admin.put(BASE, json.dumps(dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(),
                                        ca_certs=world["pki"].ca_pem.decode(), host="127.0.0.1",
                                        port=recording.port, server_hostname="localhost")),
                  content_type="application/json")
        yield recording


REFUSED = [
    {"headers": {"Host": "evil.example"}},
    {"headers": {"host": "evil.example"}},
    {"headers": {"Content-Length": "0"}},
    {"headers": {"content-LENGTH": "5"}},
    {"headers": {"Transfer-Encoding": "chunked"}},
    {"headers": {"TRANSFER-ENCODING": "chunked"}},
    {"headers": {"Connection": "keep-alive, X-Foo"}},
    {"headers": {"Upgrade": "h2c"}},
    {"headers": {"TE": "trailers"}},
    {"headers": {"Trailer": "X-Sig"}},
    {"headers": {"Keep-Alive": "timeout=5"}},
    {"headers": {"Proxy-Authorization": "Basic eDp5"}},
    {"headers": {"proxy-connection": "keep-alive"}},
    {"headers": {"X-A": "1", "x-a": "2"}},             # one header twice
    {"headers": {"X-Test": "a\r\nHost: evil.example"}},
    {"headers": {"X-Test": "a\nb"}},
    {"headers": {"X-Test": "a\tb"}},
    {"headers": {"X-Test": "a\x00b"}},
    {"headers": {"X-Test": "a\x7fb"}},
    {"headers": {"X-Test": "a\x85b"}},                 # C1 NEL
    {"headers": {"X-Test": "snow \u2603"}},             # not ISO-8859-1
    {"headers": {"X\tTest": "1"}},
    {"headers": {"X Test": "1"}},
    {"headers": {"X-Test\x01": "1"}},
    {"headers": {"": "1"}},
    {"path": "/a\r\nHost: evil.example"},
    {"path": "/a b"},
    {"path": "/a\tb"},
    {"path": "/a\x00"},
    {"path": "/a\x1b[0m"},
    {"path": "/caf\u00e9"},
    {"method": "GET\r\n"},
    {"method": "G\x00ET"},
    {"method": "GET /x HTTP/1.1\r\nX:"},
]


@pytest.mark.parametrize("body", REFUSED, ids=repr)
def test_refused_before_anything_is_sent(admin, peer, body):
    error = admin.post(BASE + "/request", json.dumps(dict({"method": "GET", "path": "/"}, **body)),
                       content_type="application/json", status=400).json["error"]
    assert error["code"] == "invalid_request" and error["message"]
    assert "Traceback" not in error["message"]
    assert peer.accepted == 0 and peer.received == []  # not even a connection


def test_ordinary_custom_headers_arrive_intact(admin, peer):
    headers = {"X-Request-Id": "abc-123", "Authorization": "Bearer t0k3n", "Accept": "application/json",
               "X-Latin": "caf\u00e9", "X-Quoted": "a \"b\"; c=d, e"}
    reply = admin.post(BASE + "/request", json.dumps({"method": "POST", "path": "/p?q=1&r=%20", "headers": headers,
                                                      "body": "hi"}), content_type="application/json").json
    assert reply["ok"] and reply["status"] == 200 and reply["body"] == "ok"
    raw = peer.received[0]
    head = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /p?q=1&r=%20 HTTP/1.1"
    for name, value in headers.items():
        assert f"{name}: {value}".encode("latin-1") in head
    hosts = [line for line in head if line.lower().startswith(b"host:")]
    assert hosts == [f"Host: localhost:{peer.port}".encode()]  # exactly one, ours
    assert sum(line.lower().startswith(b"content-length:") for line in head) == 1


@pytest.mark.parametrize("headers, ok", [({"X-Test": "value"}, True), ({"Content-Length": "1"}, False)])
def test_the_form_refuses_them_too(admin, peer, headers, ok):
    # The admin page's "Send request" goes through the same check: a refused header sends nothing.
    lines = "\n".join(f"{k}: {v}" for k, v in headers.items())
    page = admin.get("/admin/employees/asalieri/addresses/1")
    form = next(f for f in page.forms.values() if f.action.endswith("/request#result"))
    form["headers"] = lines
    reply = form.submit(status="*")
    if ok:
        assert reply.status_int == 200 and peer.accepted == 1
        assert b"X-Test: value" in peer.received[0]
    else:
        assert reply.status_int == 400 and "invalid_request" in reply.text and peer.accepted == 0
