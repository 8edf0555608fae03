"""The WSGI app: `create_app(settings)` and the module-level `app` for gunicorn."""

import logging

import webapp2
from google.cloud import ndb

import settings as settings_module
from handlers import routes

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")


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
        # Caching off: entities hold sealed keys and must be re-read after rotation.
        with self.client.context(cache_policy=False, global_cache_policy=False):
            return self.wsgi_app(environ, start_response)


def create_app(settings=None):
    """Build the app: routes, settings and the ndb middleware around them."""
    settings = settings or settings_module.from_environ()
    wsgi = webapp2.WSGIApplication(routes.ROUTES, config={"settings": settings})
    wsgi.error_handlers[404] = routes.not_found
    wsgi.error_handlers[405] = routes.method_not_allowed
    wsgi.error_handlers[500] = routes.server_error
    middleware = NdbContextMiddleware(wsgi)
    middleware.webapp = wsgi
    return middleware


app = create_app()
