"""Outbound call endpoints: handshake, request and echo for a stored identity."""

import models
import outbound
from dyncert.errors import InputError
from handlers.api import ApiHandler

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
MAX_SEND = 64 * 1024  # request bodies and echo lines we forward


def valid_header(name, value):
    """A header name token and a value without line breaks (no header injection)."""
    return (isinstance(name, str) and isinstance(value, str) and name.isascii() and name.strip() == name
            and name and not any(c in name for c in ":()<>@,;\\\"/[]?={} \t\r\n\0")
            and not any(c in value for c in "\r\n\0"))


def request_params(body):
    """Validate a `.../request` body into (method, path, headers, body)."""
    method = body.get("method", "GET")
    path = body.get("path", "/")
    headers = body.get("headers") or {}
    payload = body.get("body") or ""
    if method not in METHODS:
        raise InputError("invalid_request", f"'method' must be one of {', '.join(METHODS)}.")
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "\r\n\0 "):
        raise InputError("invalid_request", "'path' must start with '/' and hold no spaces or line breaks.")
    if not isinstance(headers, dict) or not all(valid_header(k, v) for k, v in headers.items()):
        raise InputError("invalid_request", "'headers' must be an object of header names to string values.")
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
        if status in (502, 504):
            return self.write_json({"ok": False, "error": {"code": code, "message": message}}, status)
        return super().error_response(status, code, message)

    def stored(self, employee, address):
        return models.load_identity(employee, address, self.settings)


class Handshake(CallHandler):
    """POST .../handshake."""

    def post(self, employee, address):
        self.json_body()  # an empty body is expected; a malformed one is still refused
        self.write_json(outbound.handshake(self.stored(employee, address), self.settings))


class Request(CallHandler):
    """POST .../request."""

    def post(self, employee, address):
        method, path, headers, payload = request_params(self.json_body())
        self.write_json(outbound.request(self.stored(employee, address), self.settings,
                                         method, path, headers, payload))


class Echo(CallHandler):
    """POST .../echo."""

    def post(self, employee, address):
        send = echo_param(self.json_body())
        self.write_json(outbound.echo(self.stored(employee, address), self.settings, send))


class Fetch(CallHandler):
    """POST /api/v1/fetch: a server-only HTTPS GET (default trust store, PEP 493's PYTHONHTTPSVERIFY)."""

    def post(self):
        self.write_json(outbound.fetch(self.json_body().get("url"), self.settings))
