"""The CLI tests every slot every way (issue 19.2): request and echo for current, next --request / --echo,
and the same "what to check" the admin page shows for a remote error code.
"""

import json

from tests.harness import pki
from tests.harness.app import token_of
from explanations import EXPLANATIONS
from tests.harness.peers import PythonTLSPeer
from tests.harness.ports import refused_port
from tests.harness.app import cli, served  # noqa: F401 - the fixture is used by name
from tests.harness.refusing_peers import nginx_peer

API = "/api/v1/employees/asalieri/addresses/1"
PAGE = "/admin/employees/asalieri/addresses/1"


def world():
    p = pki.make_pki("cli calls")
    return dict(pki=p, server=pki.server_cert(p.root), current=pki.client_cert(p.clients_ca, "current"),
                next=pki.client_cert(p.clients_ca, "next"),
                stranger=pki.client_cert(pki.make_pki("stranger").clients_ca, "mallory"))


W = world()


def body_of(creds, port):
    return dict(cert=creds.cert_pem.decode(), key=creds.key_pem.decode(), ca_certs=W["pki"].ca_pem.decode(),
                host="127.0.0.1", port=port, server_hostname="localhost")


def test_request_and_next_request(served, settings, admin):  # noqa: F811
    token = settings.admin_token
    with PythonTLSPeer(W["server"], W["pki"].ca_pem) as peer:
        admin.put_json(API, body_of(W["current"], peer.port), status=201)
        admin.put_json(API + "/next", body_of(W["next"], peer.port), status=201)
        current = cli(served, token, "request", "asalieri", "1", "--method", "POST", "--path", "/cli",
                      "-H", "X-Test: 1", "--body", "hello")
        assert current.returncode == 0, current.stderr
        reply = json.loads(current.stdout)
        assert reply["status"] == 200
        assert json.loads(reply["body"])["fingerprint_sha256"] == W["current"].fingerprint_sha256
        nxt = cli(served, token, "next", "asalieri", "1", "--request", "--path", "/cli")
        assert nxt.returncode == 0, nxt.stderr
        assert json.loads(json.loads(nxt.stdout)["body"])["fingerprint_sha256"] == W["next"].fingerprint_sha256


def test_echo_and_next_echo(served, settings, admin):  # noqa: F811
    token = settings.admin_token
    with PythonTLSPeer(W["server"], W["pki"].ca_pem, mode="echo") as peer:
        admin.put_json(API, body_of(W["current"], peer.port), status=201)
        admin.put_json(API + "/next", body_of(W["next"], peer.port), status=201)
        current = json.loads(cli(served, token, "echo", "asalieri", "1", "--send", "ping").stdout)
        assert current["received"] == "ping\n"  # a line: the newline is added
        assert current["tls"]["client_fingerprint_sha256"] == W["current"].fingerprint_sha256
        nxt = json.loads(cli(served, token, "next", "asalieri", "1", "--echo", "--send", "pong").stdout)
        assert nxt["received"] == "pong\n" and nxt["tls"]["client_fingerprint_sha256"] == W["next"].fingerprint_sha256


def test_next_request_without_a_next_names_the_command(served, settings, admin):  # noqa: F811
    admin.put_json(API, body_of(W["current"], 9), status=201)
    result = cli(served, settings.admin_token, "next", "asalieri", "1", "--request")
    assert result.returncode == 1 and "409 no_next" in result.stderr
    assert "python -m tools.identity next asalieri 1 --cert" in result.stderr and "PUT .../next" not in result.stderr


def test_refusal_at_the_http_layer_prints_what_to_check(served, settings, admin):  # noqa: F811
    token = settings.admin_token
    with nginx_peer(W["server"], W["pki"].ca_pem) as peer:
        admin.put_json(API, body_of(W["current"], peer.port), status=201)
        admin.put_json(API + "/next", body_of(W["stranger"], peer.port), status=201)
        refused = cli(served, token, "next", "asalieri", "1", "--request")
        assert refused.returncode == 1 and refused.stdout == ""
        assert "502 peer_rejected_certificate" in refused.stderr and "HTTP 400" in refused.stderr
        what, check = EXPLANATIONS["peer_rejected_certificate"]
        assert f"What happened: {what}" in refused.stderr and f"What to check: {check}" in refused.stderr
        # The twin: the current certificate nginx trusts.
        ok = cli(served, token, "request", "asalieri", "1")
        assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == 200 and ok.stderr == ""
        # Another 4xx is an answer: ok, printed, and flagged on stderr (the page's amber).
        answered = cli(served, token, "request", "asalieri", "1", "--path", "/plain-403")
        assert answered.returncode == 0 and json.loads(answered.stdout)["status"] == 403
        assert "the partner answered 403" in answered.stderr


def test_the_cli_prints_the_pages_what_to_check(served, settings, admin, signed_in):  # noqa: F811
    admin.put_json(API, body_of(W["current"], refused_port()), status=201)
    result = cli(served, settings.admin_token, "handshake", "asalieri", "1")
    assert result.returncode == 1 and "connection_refused" in result.stderr
    page = signed_in.get(PAGE)
    failed = signed_in.post(PAGE + "/test", {"csrf_token": token_of(page)}, status=502)
    shown = " ".join(failed.html.select_one("#result").text.split())
    check = EXPLANATIONS["connection_refused"][1]
    assert f"What to check: {check}" in shown and f"What to check: {check}" in result.stderr
