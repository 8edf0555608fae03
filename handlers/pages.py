"""Public pages: home, health check, sign-in and sign-out."""

import os
import re
import urllib.parse

from handlers import auth
from handlers.base import BaseHandler, PageHandler
from handlers.status import deployed_runtime, status_facts

# `make run` sets a random id per run and checks it on /healthz: proof the port is its own app.
RUN_ID = os.environ.get("DYNCERT_RUN_ID", "")


class Healthz(BaseHandler):
    """Liveness probe: no auth, no storage."""

    public = True

    def get(self):
        self.response.content_type = "text/plain"
        if RUN_ID:
            self.response.headers["X-Dyncert-Run"] = RUN_ID
        self.response.text = "ok"


class Home(PageHandler):
    """What the sample does, and this runtime's true TLS facts."""

    public = True

    def get(self):
        self.render("home.html", facts=status_facts(self.settings), runtime=deployed_runtime())


# A path of this app: "/" then URL characters, never "//" or "/\\" (a browser reads those as a host).
SAFE_NEXT = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")


def safe_next(target):
    """Only an absolute path on this app is followed after sign-in (no open redirect)."""
    if not isinstance(target, str) or not SAFE_NEXT.fullmatch(target):
        return "/admin"
    decoded = target
    for _ in range(3):  # the encoded forms of "//", "\\" and control characters count too
        decoded = urllib.parse.unquote(decoded)
    if not SAFE_NEXT.fullmatch(decoded.split("?")[0]) or decoded.startswith("//"):
        return "/admin"
    return target


class SignIn(PageHandler):
    """Exchange the admin token for a server-side session (wrong tokens: growing delays per address)."""

    public = True

    def get(self):
        self.render("signin.html", next=safe_next(self.request.get("next", "/admin")), error=None,
                    on_app_engine=self.settings.on_app_engine)

    def post(self):
        next_url = safe_next(self.request.POST.get("next", "/admin"))
        token = self.request.POST.get("token", "")
        how, wait = auth.check_credential(self.request, self.settings, token.strip() if isinstance(token, str) else "")
        if how == auth.RATE_LIMITED:  # answered at once: a worker never sleeps for an attacker
            return self.rate_limited(wait)
        if how == auth.WRONG:
            self.response.status_int = 401
            error = "That is not the admin token." + (f" Wait {wait} s before the next try." if wait else "")
            return self.render("signin.html", next=next_url, error=error,
                               on_app_engine=self.settings.on_app_engine)
        auth.sign_in(self.request, self.response, self.settings)
        self.redirect(next_url)


class SignOut(PageHandler):
    """End the session: in Datastore (a copied cookie dies too) and in this browser."""

    def post(self):
        auth.sign_out(self.request, self.response, self.settings)
        self.redirect("/")
