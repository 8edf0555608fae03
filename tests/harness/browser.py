"""A browser-like test client signed in through /signin, and the CSRF token its pages carry."""

import webtest

from .app import token_of


def signed_in(app, admin_token, **environ):
    """(client holding a server-side session cookie, the CSRF token of its forms and X-CSRF-Token)."""
    browser = webtest.TestApp(app, extra_environ=environ or None)
    browser.post("/signin", {"token": admin_token, "csrf_token": token_of(browser.get("/signin")),
                             "next": "/admin"}, status=302)
    return browser, token_of(browser.get("/admin/new"))
