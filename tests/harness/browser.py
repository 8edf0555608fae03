"""A browser-like test client signed in through /signin, and the CSRF token its pages carry."""

import re

import webtest


def page_token(response):
    """The csrf_token of the first form on a page."""
    return re.search(r'name="csrf_token" value="([^"]+)"', response.text).group(1)


def signed_in(app, admin_token, **environ):
    """(client holding a server-side session cookie, the CSRF token of its forms and X-CSRF-Token)."""
    browser = webtest.TestApp(app, extra_environ=environ or None)
    browser.post("/signin", {"token": admin_token, "csrf_token": page_token(browser.get("/signin")),
                             "next": "/admin"}, status=302)
    return browser, page_token(browser.get("/admin/new"))
