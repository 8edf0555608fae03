"""The JSON API of API.md: status and identities."""

from handlers.base import BaseHandler
from handlers.status import status_facts
from models import schema
from models.store import delete_identity, get_entity, list_identities, put_identity
from models.views import public_view


def actor(handler):
    """Who made a change, for the history: the App Engine user's email, `admin-token`, `session`."""
    how = getattr(handler, "auth_method", None)
    if how == "bearer":
        return "admin-token"
    if how == "session":
        return "session"
    return handler.principal if isinstance(getattr(handler, "principal", None), str) else "unknown"


class ApiHandler(BaseHandler):
    """A JSON route of API.md (errors answer in API.md's shape: see BaseHandler.dispatch)."""


class Status(ApiHandler):
    """GET /api/v1/status: runtime facts."""

    def get(self):
        self.write_json(status_facts(self.settings))


class Identities(ApiHandler):
    """GET /api/v1/identities: every identity's public view."""

    def get(self):
        self.write_json({"identities": list_identities()})


class Identity(ApiHandler):
    """GET, PUT, DELETE one identity."""

    body_fields = schema.UPLOAD

    def get(self, employee, address):
        self.write_json(public_view(get_entity(employee, address)))

    def put(self, employee, address):
        view, created = put_identity(employee, address, self.json_body(), self.settings,
                                     actor=actor(self))
        self.write_json(view, 201 if created else 200)

    def delete(self, employee, address):
        delete_identity(employee, address, actor=actor(self), settings=self.settings)
        self.response.status_int = 204
        del self.response.headers["Content-Type"]  # a 204 has no body to describe
