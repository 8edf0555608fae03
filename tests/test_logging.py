"""Cloud Logging lines (applog): one JSON object per line with severity, trace and the outbound call's fields."""

import io
import json
import logging

import pytest
import webtest

import applog
import main
from tests.harness import pki
from tests.harness.peers import PythonTLSPeer
from tests.harness.leaks import Scanner, secret_lines

TRACE_ID = "105445aa7843bc8bf206b12000100000"
BASE = "/api/v1/employees/asalieri/addresses/{}"


@pytest.fixture
def logs():
    """Configure logging for an environment; the lines land in a buffer; the previous setup is restored."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()

    def configure(**environ):
        applog.configure(environ, stream=buffer)
        return buffer
    yield configure
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


@pytest.fixture(scope="module")
def world(run_pki):
    p = run_pki.ours
    return dict(pki=p, server=run_pki.server, client=pki.client_cert(p.clients_ca, "logged"),
                stranger=run_pki.stranger)


def lines(buffer):
    """Every line written, parsed as JSON (fails if one is not a JSON object)."""
    parsed = [json.loads(line) for line in buffer.getvalue().splitlines() if line]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def outbound(entries):
    return [e for e in entries if e.get("event") == "outbound_call"]


def store_and_call(settings, world, peer, trace=None, address=1):
    """PUT an identity aimed at `peer`, then a handshake through the app, with an X-Cloud-Trace-Context."""
    api = webtest.TestApp(main.create_app(settings),
                          extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
    client = world["client"]
    api.put_json(BASE.format(address), {"cert": client.cert_pem.decode(), "key": client.key_pem.decode(),
                                        "ca_certs": world["pki"].ca_pem.decode(), "host": "127.0.0.1",
                                        "port": peer.port, "server_hostname": "localhost"})
    headers = {"X-Cloud-Trace-Context": trace} if trace else {}
    return api.post(BASE.format(address) + "/handshake", headers=headers, expect_errors=True)


@pytest.mark.parametrize("environ", [{"LOG_FORMAT": "json"}, {"GAE_ENV": "standard"}])
def test_json_lines_carry_severity_trace_and_call_fields(datastore, settings, world, logs, environ):
    buffer = logs(GOOGLE_CLOUD_PROJECT="demo-project", **environ)
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        assert store_and_call(settings, world, peer, f"{TRACE_ID}/1234;o=1").status_int == 200
    (entry,) = outbound(lines(buffer))
    assert entry["severity"] == "INFO"
    assert entry["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{TRACE_ID}"
    assert entry["logging.googleapis.com/spanId"] == "1234"
    assert entry["logging.googleapis.com/trace_sampled"] is True
    assert entry["identity"] == "asalieri/1" and entry["target"] == f"127.0.0.1:{peer.port}"
    assert entry["outcome"] == "ok" and isinstance(entry["elapsed_ms"], float)
    assert entry["fingerprint_sha256"] == world["client"].fingerprint_sha256
    assert entry["message"].startswith("outbound_call handshake asalieri/1")
    assert not entry["message"].lstrip().startswith("{")  # fields are fields, not JSON inside the message


def test_a_failed_call_logs_its_code(datastore, settings, world, logs):
    buffer = logs(LOG_FORMAT="json", GOOGLE_CLOUD_PROJECT="demo-project")
    stranger_server = pki.server_cert(world["stranger"].root)
    with PythonTLSPeer(stranger_server, world["pki"].ca_pem) as peer:
        assert store_and_call(settings, world, peer, TRACE_ID).status_int == 502
    (entry,) = outbound(lines(buffer))
    assert entry["outcome"] == "unknown_ca"
    assert entry["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{TRACE_ID}"


@pytest.mark.parametrize("header", [None, "not-a-trace", f"{TRACE_ID}/1;o=1\n{{\"severity\": \"ERROR\"}}",
                                    "0" * 31, f"{TRACE_ID}x/1"])
def test_a_missing_or_forged_trace_header_gives_no_trace(datastore, settings, world, logs, header):
    buffer = logs(LOG_FORMAT="json", GOOGLE_CLOUD_PROJECT="demo-project")
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        store_and_call(settings, world, peer, header)
    (entry,) = outbound(lines(buffer))  # still one JSON object per line: nothing was injected
    assert entry["logging.googleapis.com/trace"] == ""
    assert entry["severity"] == "INFO"


def test_no_trace_outside_a_request(logs):
    buffer = logs(LOG_FORMAT="json", GOOGLE_CLOUD_PROJECT="demo-project")
    logging.getLogger("dyncert.test").warning("between requests", extra={"json_fields": {"n": 1}})
    (entry,) = [e for e in lines(buffer) if e.get("message") == "between requests"]
    assert entry["severity"] == "WARNING" and entry["n"] == 1 and entry["logging.googleapis.com/trace"] == ""


def test_text_lines_by_default(datastore, settings, world, logs):
    buffer = logs()
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        store_and_call(settings, world, peer, TRACE_ID)
    text = [line for line in buffer.getvalue().splitlines() if "outbound_call" in line]
    assert text == [line for line in text if line.startswith("INFO dyncert.calls outbound_call handshake")]
    assert len(text) == 1


@pytest.mark.parametrize("value, expected", [
    ({"LOG_FORMAT": "json"}, True), ({"LOG_FORMAT": " JSON "}, True), ({"GAE_ENV": "standard"}, True),
    ({}, False), ({"LOG_FORMAT": "text"}, False), ({"GAE_ENV": "localdev"}, False),
])
def test_json_wanted(value, expected):
    assert applog.json_wanted(value) is expected


def test_configure_replaces_its_own_handler(logs):
    logs(LOG_FORMAT="json")
    logs()
    assert sum(getattr(h, "_dyncert_applog", None) is applog._Installed for h in logging.getLogger().handlers) == 1


def test_no_key_material_in_json_logs(datastore, settings, world, logs):
    buffer = logs(LOG_FORMAT="json", GOOGLE_CLOUD_PROJECT="demo-project")
    logging.getLogger().setLevel(logging.DEBUG)  # every logger, at DEBUG
    client = world["client"]
    scanner = Scanner(secret_lines(client.key_pem))
    api = webtest.TestApp(main.create_app(settings),
                          extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
    body = {"cert": client.cert_pem.decode(), "key": client.key_pem.decode(),
            "ca_certs": world["pki"].ca_pem.decode(), "host": "127.0.0.1", "server_hostname": "localhost"}
    with PythonTLSPeer(world["server"], world["pki"].ca_pem) as peer:
        api.put_json(BASE.format(1), dict(body, port=peer.port))
        for bad in ({"host": client.key_pem.decode()}, {"cert": client.key_pem.decode()},
                    {"server_hostname": client.key_pem.decode()}):
            api.put_json(BASE.format(2), dict(body, port=peer.port, **bad), status=400)
        api.post(BASE.format(1) + "/handshake", headers={"X-Cloud-Trace-Context": TRACE_ID})
        api.post_json(BASE.format(1) + "/request", {"method": "GET", "path": "/"})
    entries = lines(buffer)
    assert len(outbound(entries)) == 2  # the logs were really captured
    scanner.check(buffer.getvalue(), "JSON log lines")
    assert "PRIVATE KEY" not in buffer.getvalue()
