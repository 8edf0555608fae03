"""Base handlers: security headers, auth gate, JSON and template responses."""

import json
import logging
import re

import webapp2

import models
import sealing
from dyncert.errors import InputError, RemoteError
from handlers import auth
from handlers.templating import render

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


# A private key PEM block, complete or cut short: typed into any form field, it is never shown again.
PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S)


class ApiError(Exception):
    """An error answered as API.md's JSON error shape."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def storage_error_types():
    """Exception types that mean Datastore could not be reached."""
    from google.api_core import exceptions as gexc
    return (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError)


def cache_error_types():
    """Exception types that mean the Redis global cache could not be reached (only set with REDIS_CACHE_URL)."""
    import redis
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class BaseHandler(webapp2.RequestHandler):
    """Common behaviour; subclasses set `public = True` to skip the admin gate."""

    public = False

    @property
    def settings(self):
        return self.app.config["settings"]

    def dispatch(self):
        try:
            self.principal, self.auth_method = auth.identify(self.request, self.settings)
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
        except RemoteError as e:
            return self.error_response(504 if e.code == "timeout" else 502, e.code, e.message)
        except models.NotFound as e:
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
        except cache_error_types() as e:  # ndb could not lock the cached copy first: nothing was written
            log.warning("cache unavailable: %s", type(e).__name__)
            self.response.headers["Retry-After"] = "5"
            return self.error_response(503, "cache_unavailable",
                                       "The identity cache (Redis) is not reachable, so nothing was changed; "
                                       "retry in a few seconds.")

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
        """401/403 for anonymous or non-admin callers."""
        if why == auth.FORBIDDEN:
            return self.error_response(403, "forbidden", "This page is for administrators only.")
        self.response.headers["WWW-Authenticate"] = 'Bearer realm="dyncert"'
        return self.error_response(401, "unauthenticated", "Sign in as an administrator first.")

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
        if isinstance(values.get("form"), dict):  # a form shown again never echoes a pasted private key
            values["form"] = {k: PRIVATE_KEY_BLOCK.sub("", v) if isinstance(v, str) else v
                              for k, v in values["form"].items()}
        values.setdefault("csrf_token", self.csrf())
        values.setdefault("signed_in", self.principal is not None)
        values.setdefault("principal", self.principal)
        self.response.content_type = "text/html"
        self.response.charset = "utf-8"
        self.response.text = render(template, **values)
