"""The Jinja2 environment (autoescape on) and a render helper."""

import os

import jinja2

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every value is escaped unless a template says otherwise
    undefined=jinja2.StrictUndefined,  # a typo in a template fails loudly in tests
    trim_blocks=True, lstrip_blocks=True,
)


def render(name, **values):
    """Render template `name` with `values`."""
    return ENV.get_template(name).render(**values)
