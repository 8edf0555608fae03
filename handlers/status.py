"""The runtime facts both the home page and `GET /api/v1/status` show (shared by the HTML and JSON sides)."""

from dyncert import context, runtime
from models.store import count_identities


def status_facts(settings):
    """The runtime facts shown on `/` and by `GET /api/v1/status`."""
    trust = context.default_trust()
    return dict(runtime.facts(), https_verify=settings.https_verify,
                ca_file=settings.ca_file or trust["cafile"],
                ca_path=None if settings.ca_file else trust["capath"],
                identities=count_identities())
