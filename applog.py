"""Log lines Cloud Logging understands: on App Engine (or LOG_FORMAT=json) one JSON object per line.

Each line carries `severity`, `message` and `logging.googleapis.com/trace` (from the request's
X-Cloud-Trace-Context and the project id), so a request's lines group together in the Logs
Explorer; fields passed as `extra={"json_fields": {...}}` become fields of the entry. The JSON
is google-cloud-logging's StructuredLogHandler (stdout, no API calls). Elsewhere: plain text.
"""

import contextvars
import logging
import os
import re
import sys

TEXT_FORMAT = "%(levelname)s %(name)s %(message)s"
# X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=OPTIONS (32 hex digits, a decimal span id). The header
# comes from outside: anything else is ignored, so a client cannot write into another request's trace.
_TRACE_HEADER = re.compile(r"^([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([01]))?$")

_request_trace = contextvars.ContextVar("request_trace", default=None)  # (trace_id, span_id, sampled)


def json_wanted(environ=None):
    """True on App Engine (GAE_ENV=standard) or when LOG_FORMAT=json."""
    environ = os.environ if environ is None else environ
    return environ.get("GAE_ENV") == "standard" or environ.get("LOG_FORMAT", "").strip().lower() == "json"


def parse_trace_header(value):
    """(trace_id, span_id or None, sampled) from an X-Cloud-Trace-Context value, or None if malformed."""
    match = _TRACE_HEADER.match(value or "")
    if not match:
        return None
    trace_id, span_id, options = match.groups()
    return trace_id.lower(), span_id, options == "1"


class TraceMiddleware:
    """Remember the request's X-Cloud-Trace-Context while the app handles it (log lines pick it up)."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        token = _request_trace.set(parse_trace_header(environ.get("HTTP_X_CLOUD_TRACE_CONTEXT")))
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            _request_trace.reset(token)


def _structured_handler_class():
    """StructuredLogHandler that takes the trace from the request being handled (imported only when used)."""
    from google.cloud.logging_v2.handlers import StructuredLogHandler

    class RequestTraceHandler(StructuredLogHandler):
        """StructuredLogHandler; the trace fields come from TraceMiddleware (webapp2 is not auto-detected)."""

        def handle(self, record):
            trace = _request_trace.get()
            if trace is not None and self.project_id and not hasattr(record, "trace"):
                trace_id, span_id, sampled = trace
                record.trace = f"projects/{self.project_id}/traces/{trace_id}"
                record.span_id = span_id
                record.trace_sampled = sampled
            return super().handle(record)

    return RequestTraceHandler


class _Installed:
    """Marks the root handler this module installed, so configure() replaces rather than stacks."""


def configure(environ=None, stream=None, level=logging.INFO):
    """Install one root handler: JSON lines for Cloud Logging when json_wanted(), else plain text."""
    environ = os.environ if environ is None else environ
    stream = stream or sys.stderr
    if json_wanted(environ):
        handler = _structured_handler_class()(project_id=environ.get("GOOGLE_CLOUD_PROJECT") or None, stream=stream)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler._dyncert_applog = _Installed
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_dyncert_applog", None) is _Installed]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
