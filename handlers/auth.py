"""Who is asking: admin token, signed session cookie, App Engine admin headers; CSRF."""

import hashlib
import hmac
import secrets
import time

SESSION_COOKIE = "dyncert_session"
CSRF_COOKIE = "dyncert_csrf"
SESSION_SECONDS = 8 * 3600  # a working day; then sign in again

ANONYMOUS = "anonymous"   # no credentials at all -> 401
FORBIDDEN = "forbidden"   # credentials, but not an admin -> 403


def _sign(secret, message):
    """HMAC-SHA256 of `message` under `secret`, hex."""
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def token_matches(settings, candidate):
    """True when `candidate` is the configured admin token (constant time)."""
    return bool(settings.admin_token) and hmac.compare_digest(
        candidate.encode(), settings.admin_token.encode())


def make_session(settings, now=None):
    """A session cookie value: issue time plus a signature; it holds no secret."""
    issued = str(int(now if now is not None else time.time()))
    return f"{issued}.{_sign(settings.session_secret, 'admin-session|' + issued)}"


def session_valid(settings, value, now=None):
    """True when `value` is a session we signed and it has not expired."""
    issued, _, signature = (value or "").partition(".")
    if not issued.isdigit() or not signature:
        return False
    expected = _sign(settings.session_secret, "admin-session|" + issued)
    if not hmac.compare_digest(signature, expected):
        return False
    age = (now if now is not None else time.time()) - int(issued)
    return 0 <= age <= SESSION_SECONDS


def identify(request, settings):
    """Return (principal, how) for an admin, or (None, ANONYMOUS | FORBIDDEN)."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and token_matches(settings, value.strip()):
            return "admin", "bearer"
        return None, ANONYMOUS
    if session_valid(settings, request.cookies.get(SESSION_COOKIE)):
        return "admin", "session"
    # App Engine sets these headers itself and strips client copies; elsewhere anyone can forge them.
    if settings.on_app_engine:
        email = request.headers.get("X-Appengine-User-Email")
        if email:
            if request.headers.get("X-Appengine-User-Is-Admin") == "1":
                return email, "app_engine"
            return None, FORBIDDEN
    return None, ANONYMOUS


def csrf_token(request):
    """The CSRF token of this browser (double-submit cookie), or a fresh one."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


def csrf_valid(request, submitted):
    """True when the form's token equals the browser's CSRF cookie."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and bool(submitted) and hmac.compare_digest(cookie, submitted)
