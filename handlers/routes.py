"""Every route of the app, and the error pages webapp2 falls back to."""

import json
import logging

import webapp2

from handlers import api, calls, cron, lifecycle, pages, static
from handlers.admin import pages as admin_pages, rotation as admin_rotation

EMPLOYEE = r"<employee:[^/]+>"
ADDRESS = r"<address:[^/]+>"
IDENTITY = f"/api/v1/employees/{EMPLOYEE}/addresses/{ADDRESS}"
ADMIN_IDENTITY = f"/admin/employees/{EMPLOYEE}/addresses/{ADDRESS}"

ROUTES = [
    webapp2.Route("/", pages.Home),
    webapp2.Route("/healthz", pages.Healthz),
    webapp2.Route(r"/static/<name:.+>", static.StaticFile),
    webapp2.Route("/favicon.ico", static.Favicon),
    webapp2.Route("/signin", pages.SignIn),
    webapp2.Route("/signout", pages.SignOut),
    webapp2.Route("/api/v1/status", api.Status),
    webapp2.Route("/api/v1/identities", api.Identities),
    webapp2.Route(IDENTITY, api.Identity),
    webapp2.Route(IDENTITY + "/handshake", calls.Handshake),
    webapp2.Route(IDENTITY + "/request", calls.Request),
    webapp2.Route(IDENTITY + "/echo", calls.Echo),
    webapp2.Route(IDENTITY + "/csr", lifecycle.Csr),
    webapp2.Route(IDENTITY + "/next", lifecycle.Next),
    webapp2.Route(IDENTITY + "/next/handshake", lifecycle.NextHandshake),
    webapp2.Route(IDENTITY + "/next/request", lifecycle.NextRequest),
    webapp2.Route(IDENTITY + "/next/echo", lifecycle.NextEcho),
    webapp2.Route(IDENTITY + "/promote", lifecycle.Promote),
    webapp2.Route(IDENTITY + "/rollback", lifecycle.Rollback),
    webapp2.Route(IDENTITY + "/history", lifecycle.History),
    webapp2.Route("/api/v1/fetch", calls.Fetch),
    webapp2.Route("/cron/expiry", cron.Expiry),
    webapp2.Route("/admin", admin_pages.List),
    webapp2.Route("/admin/new", admin_pages.New),
    webapp2.Route(ADMIN_IDENTITY, admin_pages.Detail),
    webapp2.Route(ADMIN_IDENTITY + "/delete", admin_pages.Delete),
    webapp2.Route(ADMIN_IDENTITY + "/test", admin_pages.Test),
    webapp2.Route(ADMIN_IDENTITY + "/request", admin_pages.Request),
    webapp2.Route(ADMIN_IDENTITY + "/echo", admin_pages.Echo),
    webapp2.Route(ADMIN_IDENTITY + "/csr", admin_rotation.GenerateCsr),
    webapp2.Route(ADMIN_IDENTITY + "/next", admin_rotation.UploadNext),
    webapp2.Route(ADMIN_IDENTITY + "/next/test", admin_rotation.TestNext),
    webapp2.Route(ADMIN_IDENTITY + "/next/request", admin_rotation.RequestNext),
    webapp2.Route(ADMIN_IDENTITY + "/next/discard", admin_rotation.DiscardNext),
    webapp2.Route(ADMIN_IDENTITY + "/promote", admin_rotation.Promote),
    webapp2.Route(ADMIN_IDENTITY + "/rollback", admin_rotation.Rollback),
]

PUBLIC_PATHS = ("/", "/healthz", "/signin", "/static/")


def _json_error(response, status, code, message):
    response.set_status(status)
    response.content_type = "application/json"
    response.text = json.dumps({"error": {"code": code, "message": message}}) + "\n"


def not_found(request, response, exception):
    """404 for unknown paths: a styled page for a signed-in browser, else JSON (as for anonymous callers)."""
    if not request.path.startswith("/api/") and "text/html" in request.headers.get("Accept", ""):
        if admin_pages.NotFoundPage(request, response).show():
            return
    _json_error(response, 404, "not_found", "There is nothing at this address.")


def method_not_allowed(request, response, exception):
    """405 as JSON."""
    _json_error(response, 405, "method_not_allowed", f"{request.method} is not allowed here.")


def server_error(request, response, exception):
    """500 without a stack trace; the trace goes to the log only."""
    logging.getLogger("dyncert.app").error("unhandled %s on %s %s", type(exception).__name__,
                                           request.method, request.path, exc_info=exception)
    _json_error(response, 500, "internal_error", "Something went wrong on our side.")
