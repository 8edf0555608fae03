"""The runtime facts both the home page and `GET /api/v1/status` show (shared by the HTML and JSON sides)."""

import os
import re

from dyncert import context, runtime
from models.store import count_identities

APP_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app.yaml")


def status_facts(settings):
    """The runtime facts shown on `/` and by `GET /api/v1/status`."""
    trust = context.default_trust()
    return dict(runtime.facts(), https_verify=settings.https_verify,
                ca_file=settings.ca_file or trust["cafile"],
                ca_path=None if settings.ca_file else trust["capath"],
                identities=count_identities())


def deployed_runtime(environ=None, app_yaml=APP_YAML):
    """The App Engine runtime: GAE_RUNTIME when deployed, else app.yaml's `runtime:` (so the page never drifts)."""
    environ = os.environ if environ is None else environ
    if environ.get("GAE_RUNTIME"):
        return environ["GAE_RUNTIME"]
    try:
        with open(app_yaml) as f:
            match = re.search(r"^runtime:\s*([A-Za-z0-9_]+)", f.read(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1) if match else None
