"""Base handlers: security headers, auth gate, JSON and template responses."""

import json
import logging
import re
import urllib.parse

import webapp2

import sealing
from dyncert.errors import InputError, RemoteError
from handlers import auth
from handlers.keyfilter import request_keys
from handlers.templating import render
from models.entities import NotFound

log = logging.getLogger("dyncert.app")

MAX_BODY_BYTES = 256 * 1024  # API.md: bodies over 256 KiB get 413 too_large

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
    if request.content_type == FORM_TYPES[0] and (request.content_length or 0) <= MAX_BODY_BYTES:
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
    from google.api_core import exceptions as gexc
    return (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError)


class BaseHandler(webapp2.RequestHandler):
    """Common behaviour; subclasses set `public = True` to skip the admin gate."""

    public = False

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
        except ApiError as e:
            return self.error_response(e.status, e.code, e.message)
        except InputError as e:
            return self.error_response(400, e.code, e.message)
        except UnicodeDecodeError:  # a multipart part WebOb could not decode: the sender's bytes, not our bug
            return self.error_response(400, "invalid_request", "The request holds text that is not UTF-8.")
        except RemoteError as e:
            return self.error_response(504 if e.code == "timeout" else 502, e.code, e.message)
        except NotFound as e:
            return self.error_response(404, "not_found", str(e))
        except sealing.RecordTampered as e:  # reported, never used: replacing the identity repairs it
            log.error("sealed record refused: %s", self.request.path)
            return self.error_response(409, "record_tampered", str(e))
        except sealing.UnsealError as e:
            return self.error_response(500, "key_unavailable", str(e))
        except sealing.SealingUnavailable as e:
            return self.error_response(503, "sealing_unavailable", str(e))
        except storage_error_types() as e:
            log.warning("storage unavailable: %s", type(e).__name__)
            self.response.headers["Retry-After"] = "5"
            return self.error_response(503, "storage_unavailable",
                                       "Datastore is not reachable right now; retry in a few seconds.")

    def check_request_forgery(self):
        """API.md Auth: a cookie-borne change needs this app's origin, the session's token and a JSON body."""
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
        """The request body parsed as a JSON object, or an ApiError."""
        if len(self.request.body) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"The body is larger than {MAX_BODY_BYTES // 1024} KiB.")
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

    def check_csrf(self):
        """Refuse a form post from another origin, or whose token is not this browser's."""
        if not auth.same_origin(self.request, self.settings):
            raise ApiError(403, "csrf_failed", "The form came from another site; nothing was done.")
        expected = auth.csrf_expected(self.request, self.settings, self.principal, self.auth_method)
        if not auth.csrf_valid(expected, self.request.POST.get("csrf_token")):
            raise ApiError(403, "csrf_failed", "The form expired or came from another site; reload and retry.")

    check_request_forgery = check_csrf  # every form post, whoever sends it

    def render(self, template, **values):
        """Render a Jinja2 template with the common values."""
        values.setdefault("csrf_token", self.csrf())
        values.setdefault("signed_in", self.principal is not None)
        values.setdefault("principal", self.principal)
        self.response.content_type = "text/html"
        self.response.charset = "utf-8"
        # A form shown again never echoes a pasted private key, nor a part of one (handlers.keyfilter).
        self.response.text = render(template, pasted_keys=request_keys(self.request), **values)
