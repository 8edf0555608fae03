"""Serve /static/ locally; on App Engine app.yaml's static handler answers first."""

import mimetypes
import os

from handlers.base import BaseHandler

STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


class StaticFile(BaseHandler):
    """A file under static/, or 404."""

    public = True

    def get(self, name):
        # A NUL makes os.path raise (a 500): no file of ours has one, or any control character.
        path = "" if any(c < " " or c == "\x7f" for c in name) else os.path.realpath(os.path.join(STATIC, name))
        if not path.startswith(STATIC + os.sep) or not os.path.isfile(path):
            return self.error_response(404, "not_found", "There is nothing at this address.")
        self.response.content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        self.response.headers["Cache-Control"] = "public, max-age=600"
        with open(path, "rb") as f:
            self.response.body = f.read()


class Favicon(StaticFile):
    """/favicon.ico, which browsers ask for on every page."""

    def get(self):
        super().get("favicon.ico")
