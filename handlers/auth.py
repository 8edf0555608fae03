"""Who is asking: admin token, server-side session, App Engine admin headers; CSRF and origin checks."""

import hashlib
import hmac
import secrets

import sessions

SESSION_COOKIE = "dyncert_session"
CSRF_COOKIE = "dyncert_csrf"
SESSION_SECONDS = sessions.SESSION_SECONDS

ANONYMOUS = "anonymous"   # no credentials at all -> 401
FORBIDDEN = "forbidden"   # credentials, but not an admin -> 403
RATE_LIMITED = "rate_limited"  # a wrong credential while its address (or everyone) waits -> 429
OK, WRONG = "ok", "wrong"  # what check_credential found

# Authorization: Bearer is read on the JSON API (and the cron job) only: HTML pages never look at it,
# so they answer alike with and without a valid token, and a guess there is not even compared.
BEARER_PATHS = ("/api/", "/cron/")

AMBIENT = ("session", "app_engine")  # credentials a browser sends by itself: CSRF rules apply
STATE_CHANGING = ("POST", "PUT", "DELETE", "PATCH")
DEFAULT_PORTS = {"http": "80", "https": "443"}
_SESSION = "dyncert.session"  # environ slot: the session record, looked up once per request
RETRY_AFTER = "dyncert.retry_after"  # environ slot: seconds a rate-limited caller must wait


def token_matches(settings, candidate):
    """True when `candidate` is the configured admin token (constant time)."""
    return bool(settings.admin_token) and isinstance(candidate, str) and hmac.compare_digest(
        candidate.encode("utf-8", "replace"), settings.admin_token.encode())


def secure(request, settings):
    """True when cookies must be Secure: configured so, or the request came over HTTPS."""
    return settings.secure_cookies or request.scheme == "https"


def cookie_name(name, is_secure):
    """`__Host-` prefixed when Secure: no other host or port can then set (toss) the cookie."""
    return "__Host-" + name if is_secure else name


def read_cookie(request, settings, name):
    """A cookie of ours by the name this request's scheme uses (None when the header does not parse)."""
    try:
        return request.cookies.get(cookie_name(name, secure(request, settings)))
    except UnicodeError:  # a Cookie header outside latin-1 (PEP 3333 servers never pass one, tools may)
        return None


def set_cookie(request, response, settings, name, value, max_age=None):
    """Set one of our cookies: HttpOnly, SameSite=Strict, Path=/, Secure (and __Host-) over HTTPS."""
    is_secure = secure(request, settings)
    response.set_cookie(cookie_name(name, is_secure), value, max_age=max_age, httponly=True,
                        samesite="strict", secure=is_secure, path="/")


def current_session(request, settings):
    """The live Session record of this browser's session cookie, or None."""
    if _SESSION not in request.environ:
        request.environ[_SESSION] = sessions.lookup(read_cookie(request, settings, SESSION_COOKIE),
                                                    settings.admin_token)
    return request.environ[_SESSION]


def check_credential(request, settings, candidate):
    """(OK | WRONG | RATE_LIMITED, seconds to wait) for an admin token candidate from this request.

    The limiter (sessions.charge) slows wrong guesses per address and caps them for everyone,
    but the right token is never refused: it is compared in constant time and touches no
    counter, so an attacker cannot lock the administrator out (nor gain fresh tries by the
    administrator's success). A wrong one is checked and counted in one transaction; while
    its address or everyone waits it gets the same 429 as any other wrong one, so a locked
    address learns nothing but "not the token". What makes guessing hopeless is the
    token's entropy (settings.check requires 128 bits); the limiter bounds the work and noise.
    """
    if token_matches(settings, candidate):
        return OK, 0
    counted, wait = sessions.charge(client_address(request, settings))
    return (WRONG if counted else RATE_LIMITED), wait


def identify(request, settings):
    """Return (principal, how) for an admin, or (None, ANONYMOUS | FORBIDDEN | RATE_LIMITED)."""
    header = request.headers.get("Authorization", "")
    # PATH_INFO as the server gave it (PEP 3333 latin-1): request.path would fail on non-UTF-8 bytes.
    if header and request.environ.get("PATH_INFO", "").startswith(BEARER_PATHS):
        scheme, _, value = header.partition(" ")
        how, wait = check_credential(request, settings, value.strip() if scheme.lower() == "bearer" else None)
        if how == OK:
            return "admin", "bearer"
        request.environ[RETRY_AFTER] = wait
        return None, (RATE_LIMITED if how == RATE_LIMITED else ANONYMOUS)
    record = current_session(request, settings)
    if record is not None and record.how == "session":
        return "admin", "session"
    # App Engine sets these headers itself and strips client copies; elsewhere anyone can forge them.
    if settings.on_app_engine:
        email = request.headers.get("X-Appengine-User-Email")
        if email:
            if request.headers.get("X-Appengine-User-Is-Admin") == "1":
                return email, "app_engine"
            return None, FORBIDDEN
    return None, ANONYMOUS


def sign_in(request, response, settings):
    """Start a server-side session for the admin token and set its cookie (any older one ends)."""
    sessions.end(read_cookie(request, settings, SESSION_COOKIE))
    session_id, record = sessions.start("session", "admin", settings.admin_token)
    request.environ[_SESSION] = record
    set_cookie(request, response, settings, SESSION_COOKIE, session_id, max_age=SESSION_SECONDS)


def sign_out(request, response, settings):
    """End the session in Datastore, so a copied cookie stops working too, and drop the cookie."""
    sessions.end(read_cookie(request, settings, SESSION_COOKIE))
    set_cookie(request, response, settings, SESSION_COOKIE, "", max_age=0)  # Secure again: __Host- needs it


def client_address(request, settings):
    """The caller's address for rate limits (App Engine's header only on App Engine, which sets it)."""
    if settings.on_app_engine and request.headers.get("X-Appengine-User-Ip"):
        return request.headers["X-Appengine-User-Ip"]
    return request.remote_addr or "unknown"


def _browser_token(settings, cookie):
    """The form token of a browser without a session: an HMAC of its CSRF cookie."""
    return hmac.new(settings.session_secret, b"csrf|" + cookie.encode(), hashlib.sha256).hexdigest()


def csrf_expected(request, settings, principal, how):
    """The token this browser's forms and X-CSRF-Token must carry, or None when it has none yet."""
    record = current_session(request, settings)
    if how == "session":
        return record.csrf
    if how == "app_engine":
        if record is not None and record.how == "app_engine" and record.principal == principal:
            return record.csrf
        return None
    cookie = read_cookie(request, settings, CSRF_COOKIE)
    return _browser_token(settings, cookie) if cookie else None


def issue_csrf(request, response, settings, principal, how):
    """The token for this page's forms; starts what it is bound to (session or cookie) when missing."""
    token = csrf_expected(request, settings, principal, how)
    if token:
        return token
    if how == "app_engine":  # Google's login cookie is ambient: bind the token to a session of our own
        session_id, record = sessions.start("app_engine", principal)
        request.environ[_SESSION] = record
        set_cookie(request, response, settings, SESSION_COOKIE, session_id, max_age=SESSION_SECONDS)
        return record.csrf
    cookie = secrets.token_urlsafe(32)
    set_cookie(request, response, settings, CSRF_COOKIE, cookie)
    request.cookies[cookie_name(CSRF_COOKIE, secure(request, settings))] = cookie  # later forms agree
    return _browser_token(settings, cookie)


def csrf_valid(expected, submitted):
    """True when the submitted token is the expected one (constant time; any text is just wrong)."""
    return (bool(expected) and isinstance(submitted, str) and bool(submitted)
            and hmac.compare_digest(expected.encode(), submitted.encode("utf-8", "replace")))


def _origin(scheme, host):
    """scheme://host with the scheme's default port dropped, lower case."""
    host = host.lower()
    name, _, port = host.rpartition(":")
    if name and port == DEFAULT_PORTS.get(scheme) and not host.endswith("]"):
        host = name
    return f"{scheme}://{host}"


def same_origin(request, settings):
    """False when the browser says the request came from another origin (Sec-Fetch-Site, Origin)."""
    # same-site covers other ports and sibling subdomains: SameSite cookies do not separate those.
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin.strip() == "null" and site == "same-origin":
        return True  # "null": a page of ours under a no-referrer policy, as the browser itself vouches
    scheme, sep, host = origin.strip().lower().partition("://")
    if not sep or scheme not in DEFAULT_PORTS:
        return False  # "null" (sandboxed or privacy-redirected pages) and anything odd
    ours = {_origin(request.scheme, request.host)}
    if settings.secure_cookies:  # behind App Engine's front end the app itself sees http
        ours.add(_origin("https", request.host))
    return _origin(scheme, host) in ours
