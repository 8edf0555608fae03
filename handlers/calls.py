"""Outbound call endpoints: handshake, request and echo for a stored identity."""

import outbound
from dyncert.calls import METHODS, check_request
from dyncert.errors import REMOTE_CODES, InputError
from handlers.api import ApiHandler
from models import schema
from models.store import load_identity

MAX_SEND = 64 * 1024  # request bodies and echo lines we forward


def request_params(body):
    """Validate a `.../request` body into (method, path, headers, body)."""
    method = body.get("method", "GET")
    path = body.get("path", "/")
    headers = body.get("headers") or {}
    payload = body.get("body") or ""
    if method not in METHODS:
        raise InputError("invalid_request", f"'method' must be one of {', '.join(METHODS)}.")
    # Control characters anywhere, framing and hop-by-hop headers: refused before anything is sent.
    check_request(method, path, headers)
    if not isinstance(payload, str) or len(payload.encode()) > MAX_SEND:
        raise InputError("invalid_request", f"'body' must be a string of at most {MAX_SEND // 1024} KiB.")
    return method, path, headers, payload


def echo_param(body):
    """Validate an `.../echo` body into the text to send."""
    send = body.get("send", "hello\n")
    if not isinstance(send, str) or not send or len(send.encode()) > MAX_SEND:
        raise InputError("invalid_request", f"'send' must be a non-empty string of at most {MAX_SEND // 1024} KiB.")
    return send


class CallHandler(ApiHandler):
    """Loads the identity; remote failures answer 502/504 with "ok": false."""

    def error_response(self, status, code, message):
        if code in REMOTE_CODES:  # the remote side failed: the call's own shape
            return self.write_json({"ok": False, "error": {"code": code, "message": message}}, status)
        return super().error_response(status, code, message)

    def stored(self, employee, address):
        return load_identity(employee, address, self.settings)


class Handshake(CallHandler):
    """POST .../handshake."""

    def post(self, employee, address):
        self.json_body()  # an empty body is expected; a malformed one is still refused
        self.write_json(outbound.handshake(self.stored(employee, address), self.settings))


class Request(CallHandler):
    """POST .../request."""

    body_fields = schema.REQUEST

    def post(self, employee, address):
        method, path, headers, payload = request_params(self.json_body())
        self.write_json(outbound.request(self.stored(employee, address), self.settings,
                                         method, path, headers, payload))


class Echo(CallHandler):
    """POST .../echo."""

    body_fields = schema.ECHO

    def post(self, employee, address):
        send = echo_param(self.json_body())
        self.write_json(outbound.echo(self.stored(employee, address), self.settings, send))


class Fetch(CallHandler):
    """POST /api/v1/fetch: a server-only HTTPS GET (default trust store, PEP 493's PYTHONHTTPSVERIFY)."""

    body_fields = schema.FETCH

    def post(self):
        self.write_json(outbound.fetch(self.json_body().get("url"), self.settings))
