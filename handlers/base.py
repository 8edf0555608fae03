"""Base handlers: security headers, auth gate, JSON and template responses."""

import json
import logging
import re
import urllib.parse
from typing import NamedTuple

import webapp2
from google.api_core import exceptions as gexc

import sealing
from dyncert.errors import InputError, RemoteError
from handlers import auth
from handlers.keyfilter import request_keys
from handlers.templating import render
from models import schema
from models.entities import Conflict, NotFound, TooLarge

log = logging.getLogger("dyncert.app")

SECURITY_HEADERS = {
    # No inline script, no third-party origin, never framed: the pages handle private keys.
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; form-action 'self'; base-uri 'none'; "
                                "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    # Nothing to other sites; our own forms keep a real Origin (under no-referrer browsers send "null").
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class ApiError(Exception):
    """An error answered as API.md's JSON error shape."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def check_text_encoding(request):
    """ApiError 400 unless the query string and any form body are UTF-8 (WebOb would fail with a 500)."""
    query = request.environ.get("QUERY_STRING", "")
    if not _utf8(urllib.parse.unquote_to_bytes(query.replace("+", " ").encode("latin-1", "replace"))):
        raise ApiError(400, "invalid_request", "The query string holds percent-encoded bytes that are not UTF-8.")
    if request.content_type not in FORM_TYPES:  # WebOb parses a form body whatever the method (a GET too)
        return
    if request.charset != "UTF-8":  # WebOb's own reading of the header (it refuses any other with a 500)
        raise ApiError(400, "invalid_request", "Forms must be sent as UTF-8 (charset=utf-8, or no charset).")
    if request.content_type == FORM_TYPES[0]:  # main.py's middleware has already capped the body
        if not _utf8(urllib.parse.unquote_to_bytes(request.body.replace(b"+", b" "))):
            raise ApiError(400, "invalid_request", "The form holds bytes that are not UTF-8.")


def _utf8(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def storage_error_types():
    """Exception types that mean Datastore could not be reached."""
    return (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError)


def cache_error_types():
    """Exception types that mean the Redis global cache could not be reached (only set with REDIS_CACHE_URL)."""
    import redis
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class HttpError(NamedTuple):
    """How an error is answered: status, API.md code, message."""

    status: int
    code: str
    message: str


STORAGE_DOWN = "Datastore is not reachable right now; retry in a few seconds."
CACHE_DOWN = ("The identity cache (Redis) is not reachable, so nothing was changed; "
              "retry in a few seconds.")

# The one table from error to HTTP status and code (API.md), first match wins; a code of None is the
# error's own. RecordTampered before UnsealError (its base): reported, never used, a replacement repairs it.
ERROR_TABLE = (
    (ApiError, lambda e: e.status, None),
    (InputError, 400, None),
    (UnicodeDecodeError, 400, "invalid_request"),  # a multipart part WebOb could not decode: the sender's bytes
    (RemoteError, lambda e: 504 if e.code == "timeout" else 502, None),  # the remote side's failure, not ours
    (NotFound, 404, "not_found"),
    (Conflict, 409, None),                                                # no_next, no_previous, no_pending
    (TooLarge, 413, "too_large"),                                         # a record over Datastore's 1 MiB
    (sealing.RecordTampered, 409, "record_tampered"),
    (sealing.UnsealError, 500, "key_unavailable"),
    (sealing.SealingUnavailable, 503, "sealing_unavailable"),
    (storage_error_types(), 503, "storage_unavailable"),
    (cache_error_types(), 503, "cache_unavailable"),  # ndb could not lock the cached copy first: nothing written
)


NOT_UTF8 = "The request holds text that is not UTF-8."


def http_error(error):
    """The HttpError the table gives `error`, or None for an unexpected one (webapp2's 500, no detail)."""
    for kind, status, code in ERROR_TABLE:
        if isinstance(error, kind):
            status = status(error) if callable(status) else status
            if code == "storage_unavailable":
                return HttpError(status, code, STORAGE_DOWN)
            if code == "cache_unavailable":
                return HttpError(status, code, CACHE_DOWN)
            if isinstance(error, UnicodeDecodeError):  # its str() quotes the sender's bytes
                return HttpError(status, code, NOT_UTF8)
            return HttpError(status, code or error.code, getattr(error, "message", None) or str(error))
    return None


class BaseHandler(webapp2.RequestHandler):
    """Common behaviour; subclasses set `public = True` to skip the admin gate."""

    public = False
    body_fields = schema.EMPTY  # the fields a JSON body of this route may hold (API.md "Strict bodies")

    @property
    def settings(self):
        return self.app.config["settings"]

    def dispatch(self):
        try:
            self.principal, self.auth_method = auth.identify(self.request, self.settings)
            check_text_encoding(self.request)  # before anything parses the query or the form
            if not self.public and self.principal is None:
                return self.refuse(self.auth_method)
            if self.request.method in auth.STATE_CHANGING and hasattr(self, self.request.method.lower()):
                self.check_request_forgery()
            if self.auth_method in auth.AMBIENT:  # a same-origin script reads its token from any answer
                token = auth.csrf_expected(self.request, self.settings, self.principal, self.auth_method)
                if token:
                    self.response.headers["X-CSRF-Token"] = token
            return super().dispatch()
        except Exception as e:  # noqa: BLE001 - answered through the one table, or re-raised as a bug
            answer = http_error(e)
            if answer is None:
                raise
            if answer.code == "record_tampered":
                log.error("sealed record refused: %s", self.request.path)
            elif answer.code in ("storage_unavailable", "cache_unavailable"):
                log.warning("%s: %s", answer.code.replace("_", " "), type(e).__name__)
                self.response.headers["Retry-After"] = "5"
            return self.error_response(*answer)

    def check_request_forgery(self):
        """API.md Auth: a cookie-borne change needs this app's origin, the session's token and a JSON body.

        The one CSRF check: dispatch runs it before every POST, PUT and DELETE; no handler calls it.
        """
        if self.auth_method not in auth.AMBIENT:
            return  # Authorization: Bearer is never sent by a browser on its own
        if not auth.same_origin(self.request, self.settings):
            raise ApiError(403, "csrf_failed", "The request came from another site (Origin or Sec-Fetch-Site); "
                                               "nothing was done.")
        expected = auth.csrf_expected(self.request, self.settings, self.principal, self.auth_method)
        if not auth.csrf_valid(expected, self.request.headers.get("X-CSRF-Token")):
            raise ApiError(403, "csrf_failed", "A request authenticated by a cookie needs the X-CSRF-Token "
                                               "header of that session (a page of this app shows it); "
                                               "nothing was done.")
        if (self.request.content_length or 0) > 0 and self.request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "A request authenticated by a cookie must send its "
                                                          "body as Content-Type: application/json.")

    def redirect(self, uri, permanent=False, abort=False, code=None, body=None):
        """A relative redirect to a path of this app (webapp2 would prefix the Host header)."""
        self.response.headers["Location"] = uri
        self.response.status_int = code or (301 if permanent else 302)
        return self.response

    def refuse(self, why):
        """401/403 for anonymous or non-admin callers; 429 for a wrong credential while its address waits."""
        if why == auth.RATE_LIMITED:
            return self.rate_limited(self.request.environ.get(auth.RETRY_AFTER, 1))
        if why == auth.FORBIDDEN:
            return self.error_response(403, "forbidden", "This page is for administrators only.")
        self.response.headers["WWW-Authenticate"] = 'Bearer realm="dyncert"'
        return self.error_response(401, "unauthenticated", "Sign in as an administrator first.")

    def rate_limited(self, wait):
        """429 rate_limited: the same answer for every wrong credential while its address waits."""
        self.response.headers["Retry-After"] = str(wait)
        return self.error_response(429, "rate_limited", f"Too many wrong credentials; try again in {wait} s.")

    def error_response(self, status, code, message):
        """API.md's error shape."""
        self.write_json({"error": {"code": code, "message": message}}, status)

    def write_json(self, data, status=200):
        """Serialize `data` as the JSON response body."""
        self.response.status_int = status
        self.response.content_type = "application/json"
        self.response.charset = "utf-8"
        self.response.text = json.dumps(data, indent=1, sort_keys=True) + "\n"

    def json_body(self):
        """The request body parsed as a JSON object, or an ApiError (its size was capped by main.py's middleware)."""
        if not self.request.body.strip():
            return {}
        try:
            data = json.loads(self.request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ApiError(400, "invalid_json", f"The body is not valid UTF-8 JSON: {e}.") from None
        except RecursionError:  # "[[[[..." nested deeper than the parser's stack
            raise ApiError(400, "invalid_json", "The body nests JSON arrays or objects too deeply.") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_json", "The body must be a JSON object.")
        try:  # JSON may escape a lone surrogate ("\ud800"): no UTF-8 text holds one, so refuse it here
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "invalid_json", "The body holds an unpaired UTF-16 surrogate escape "
                                                "(\\ud800-\\udfff); send valid Unicode text.") from None
        schema.check_fields(data, self.body_fields)  # an unknown field is refused before anything is done
        return data


class Response(webapp2.Response):
    """webapp2's response, but a Location header stays relative (WebOb would build it from Host)."""

    def _abs_headerlist(self, environ):
        return list(self._headerlist)


class PageHandler(BaseHandler):
    """A handler that renders HTML and sends anonymous visitors to sign in."""

    def refuse(self, why):
        if why == auth.RATE_LIMITED:
            return super().refuse(why)
        if why == auth.FORBIDDEN:
            self.response.status_int = 403
            return self.render("forbidden.html")
        return self.redirect("/signin?next=" + webapp2.quote(self.request.path_qs, safe=""))

    def error_response(self, status, code, message):
        self.response.status_int = status
        self.render("error.html", code=code, message=message)

    def csrf(self):
        """The CSRF token for forms on this page, bound to this browser's session."""
        return auth.issue_csrf(self.request, self.response, self.settings, self.principal, self.auth_method)

    def check_request_forgery(self):
        """Refuse a form post from another origin, or whose token is not this browser's (run by dispatch)."""
        if not auth.same_origin(self.request, self.settings):
            raise ApiError(403, "csrf_failed", "The form came from another site; nothing was done.")
        expected = auth.csrf_expected(self.request, self.settings, self.principal, self.auth_method)
        if not auth.csrf_valid(expected, self.request.POST.get("csrf_token")):
            raise ApiError(403, "csrf_failed", "The form expired or came from another site; reload and retry.")

    def render(self, template, **values):
        """Render a Jinja2 template with the common values."""
        values.setdefault("csrf_token", self.csrf())
        values.setdefault("signed_in", self.principal is not None)
        values.setdefault("principal", self.principal)
        values.setdefault("kms_standin", self.settings.kms_endpoint or None)  # KMS keys: say when it is a stand-in
        self.response.content_type = "text/html"
        self.response.charset = "utf-8"
        # A form shown again never echoes a pasted private key, nor a part of one (handlers.keyfilter).
        self.response.text = render(template, pasted_keys=request_keys(self.request), **values)
