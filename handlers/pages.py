"""Public pages: home, health check, sign-in and sign-out."""

import os

import models
from dyncert import context, runtime
from handlers import auth
from handlers.base import BaseHandler, PageHandler

# `make run` sets a random id per run and checks it on /healthz: proof the port is its own app.
RUN_ID = os.environ.get("DYNCERT_RUN_ID", "")


def status_facts(settings):
    """The runtime facts shown on `/` and by `GET /api/v1/status`."""
    trust = context.default_trust()
    return dict(runtime.facts(), https_verify=settings.https_verify,
                ca_file=settings.ca_file or trust["cafile"],
                ca_path=None if settings.ca_file else trust["capath"],
                identities=models.count_identities())


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
        self.render("home.html", facts=status_facts(self.settings))


def safe_next(target):
    """Only same-site paths are followed after sign-in (no open redirect)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/admin"


class SignIn(PageHandler):
    """Exchange the admin token for a signed session cookie."""

    public = True

    def get(self):
        self.render("signin.html", next=safe_next(self.request.get("next", "/admin")), error=None,
                    on_app_engine=self.settings.on_app_engine)

    def post(self):
        self.check_csrf()
        next_url = safe_next(self.request.POST.get("next", "/admin"))
        if not auth.token_matches(self.settings, self.request.POST.get("token", "").strip()):
            self.response.status_int = 401
            return self.render("signin.html", next=next_url, error="That is not the admin token.",
                               on_app_engine=self.settings.on_app_engine)
        self.response.set_cookie(auth.SESSION_COOKIE, auth.make_session(self.settings),
                                 max_age=auth.SESSION_SECONDS, httponly=True, samesite="strict",
                                 secure=self.settings.secure_cookies, path="/")
        self.redirect(next_url)


class SignOut(PageHandler):
    """Forget the session cookie."""

    def post(self):
        self.check_csrf()
        self.response.delete_cookie(auth.SESSION_COOKIE, path="/")
        self.redirect("/")
