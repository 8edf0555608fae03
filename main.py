"""The WSGI app: `create_app(settings)` and the module-level `app` for gunicorn."""

import json

import webapp2
from google.cloud import ndb

import applog
import settings as settings_module
from handlers import routes
from handlers.base import SECURITY_HEADERS

applog.configure()  # JSON lines for Cloud Logging on App Engine or with LOG_FORMAT=json, else text


class NdbContextMiddleware:
    """Run each request inside an ndb client context (python-docs-samples pattern)."""

    def __init__(self, wsgi_app, client_factory=ndb.Client):
        self.wsgi_app = wsgi_app
        self._client_factory = client_factory
        self._client = None

    @property
    def client(self):
        """The ndb client, made on first use so that importing the app needs no credentials."""
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def __call__(self, environ, start_response):
        start_response = _with_security_headers(start_response)
        if not _utf8_path(environ):
            return _bad_path(start_response)
        # Caching off: entities hold sealed keys and must be re-read after rotation.
        with self.client.context(cache_policy=False, global_cache_policy=False):
            return self.wsgi_app(environ, start_response)


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


def _with_security_headers(start_response):
    """start_response that adds the security headers a response lacks (404/405/500 skip the handlers)."""
    def start(status, headers, exc_info=None):
        present = {name.lower() for name, _ in headers}
        extra = [(k, v) for k, v in SECURITY_HEADERS.items() if k.lower() not in present]
        return start_response(status, list(headers) + extra, exc_info)
    return start


def create_app(settings=None):
    """Build the app: routes, settings and the ndb middleware around them."""
    settings = settings or settings_module.from_environ()
    wsgi = webapp2.WSGIApplication(routes.ROUTES, config={"settings": settings})
    wsgi.error_handlers[404] = routes.not_found
    wsgi.error_handlers[405] = routes.method_not_allowed
    wsgi.error_handlers[500] = routes.server_error
    middleware = NdbContextMiddleware(applog.TraceMiddleware(wsgi))
    middleware.webapp = wsgi
    return middleware


app = create_app()
