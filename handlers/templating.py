"""The Jinja2 environment (autoescape on, every printed value through the key filter) and a render helper."""

import contextvars
import os

import jinja2

from handlers import keyfilter

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")

# The private key pieces of the request being answered (keyfilter.pasted_keys): a context variable, not a
# template value, so macros imported without context filter them too.
PASTED = contextvars.ContextVar("pasted_keys", default=frozenset())


def shown(value):
    """Every printed value of every page passes here: private keys never come back (handlers.keyfilter)."""
    return keyfilter.without_private_keys(value, PASTED.get())


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every value is escaped unless a template says otherwise
    undefined=jinja2.StrictUndefined,  # a typo in a template fails loudly in tests
    trim_blocks=True, lstrip_blocks=True,
    # Every {{ value }} of every page, a form's re-shown values and error messages included: a private
    # key pasted into the wrong field is never shown again, whichever form or template shows it.
    finalize=shown,
)


def render(name, pasted_keys=frozenset(), **values):
    """Render template `name` with `values`, removing `pasted_keys` (and any private key) from what it prints."""
    token = PASTED.set(pasted_keys)
    try:
        return ENV.get_template(name).render(**values)
    finally:
        PASTED.reset(token)
