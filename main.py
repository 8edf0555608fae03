"""The WSGI app: `create_app(settings)` and the module-level `app` for gunicorn."""

import io
import json
import re

import webapp2
from google.cloud import ndb

import applog
import globalcache
import settings as settings_module
from handlers import routes
from handlers.base import SECURITY_HEADERS, Response

applog.configure()  # JSON lines for Cloud Logging on App Engine or with LOG_FORMAT=json, else text

# Request body caps by path prefix: the one place they are enforced, before anything reads the body
# (413 too_large); handlers never measure a body again.
MAX_BODY_BYTES = 256 * 1024  # API.md: bodies over 256 KiB get 413 too_large
MAX_FORM_BYTES = 512 * 1024  # the admin forms: the API's 256 KiB, plus multipart overhead and a CA file
BODY_LIMITS = (("/api/", MAX_BODY_BYTES), ("/admin/", MAX_FORM_BYTES))
SMALL_BODY_BYTES = 16 * 1024  # sign-in, sign-out, cron and the public pages need no more
HSTS = "max-age=31536000; includeSubDomains"  # App Engine serves HTTPS only: browsers should never try http


class NdbContextMiddleware:
    """Run each request inside an ndb client context (python-docs-samples pattern)."""

    def __init__(self, wsgi_app, client_factory=ndb.Client, hsts=False, global_cache=None):
        self.wsgi_app = wsgi_app
        self._client_factory = client_factory
        self._client = None
        self.hsts = hsts
        self.global_cache = global_cache  # ndb's RedisCache, or None: every read goes to Datastore

    @property
    def client(self):
        """The ndb client, made on first use so that importing the app needs no credentials."""
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def __call__(self, environ, start_response):
        start_response = _with_security_headers(start_response, self.hsts)
        if not _utf8_path(environ):
            return _bad_path(start_response)
        if environ.get("REQUEST_METHOD") not in webapp2.WSGIApplication.allowed_methods:  # webapp2: 501
            return _error(start_response, "405 Method Not Allowed", "method_not_allowed",
                          "That method is not allowed here.")
        refusal = _limit_body(environ)
        if refusal:
            return _error(start_response, *refusal)
        with self._context():
            return self.wsgi_app(environ, start_response)

    def _context(self):
        """This request's ndb context: no in-memory cache; the Redis global cache when configured."""
        # ndb locks an entity's cached copy before each write and re-reads Datastore inside
        # transactions, so a rotation through one instance is what every other one reads next.
        return globalcache.ndb_context(self.client, self.global_cache)


def _utf8_path(environ):
    """True when PATH_INFO (PEP 3333: bytes as latin-1) is UTF-8, which webapp2's router assumes."""
    try:
        environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
        return True
    except UnicodeError:
        return False


def _bad_path(start_response):
    """400 invalid_request for a path such as /api/v1/employees/%FF/... (webapp2 would answer 500)."""
    body = json.dumps({"error": {"code": "invalid_request", "message": "The URL path is not valid UTF-8."}})
    start_response("400 Bad Request", [("Content-Type", "application/json; charset=utf-8")])
    return [body.encode() + b"\n"]


def _error(start_response, status, code, message):
    """API.md's error shape, answered before the app runs."""
    start_response(status, [("Content-Type", "application/json; charset=utf-8")])
    return [json.dumps({"error": {"code": code, "message": message}}).encode() + b"\n"]


def body_limit(path):
    """The largest request body accepted on `path`, in bytes."""
    for prefix, limit in BODY_LIMITS:
        if path.startswith(prefix):
            return limit
    return SMALL_BODY_BYTES


def _limit_body(environ):
    """None when the body fits its route's cap, else (status, code, message); a chunked body is read
    into memory up to the cap and no further."""
    limit = body_limit(environ.get("PATH_INFO", ""))
    too_large = ("413 Payload Too Large", "too_large", f"The body is larger than {limit // 1024} KiB.")
    declared = environ.get("CONTENT_LENGTH", "")
    if declared:
        if not re.fullmatch(r"[0-9]{1,20}", declared):  # ASCII digits only (int() takes "١", " 5")
            return "400 Bad Request", "invalid_request", "The Content-Length header is not a number."
        return too_large if int(declared) > limit else None
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    stream, parts, size = environ["wsgi.input"], [], 0
    while size <= limit:
        part = stream.read(min(64 * 1024, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        return too_large
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(b"".join(parts)), str(size)
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return None


def _with_security_headers(start_response, hsts=False):
    """start_response that adds the security headers a response lacks (404/405/500 skip the handlers)."""
    def start(status, headers, exc_info=None):
        # webapp2 marks every response no-cache (may be stored); ours are no-store unless a handler says else.
        headers = [(k, v) for k, v in headers if not (k.lower() == "cache-control" and v == "no-cache")]
        present = {name.lower() for name, _ in headers}
        extra = [(k, v) for k, v in SECURITY_HEADERS.items() if k.lower() not in present]
        if hsts and "strict-transport-security" not in present:
            extra.append(("Strict-Transport-Security", HSTS))
        return start_response(status, headers + extra, exc_info)
    return start


def create_app(settings=None):
    """Build the app: routes, settings and the ndb middleware around them."""
    settings = settings_module.check(settings or settings_module.from_environ())
    wsgi = webapp2.WSGIApplication(routes.ROUTES, config={"settings": settings})
    wsgi.response_class = Response
    wsgi.error_handlers[404] = routes.not_found
    wsgi.error_handlers[405] = routes.method_not_allowed
    wsgi.error_handlers[500] = routes.server_error
    middleware = NdbContextMiddleware(applog.TraceMiddleware(wsgi), hsts=settings.on_app_engine,
                                      global_cache=globalcache.from_settings(settings))
    middleware.webapp = wsgi
    return middleware


app = create_app()
