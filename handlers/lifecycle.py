"""The key lifecycle routes of API.md v1.2: CSR, next (and its calls), promote, rollback, history."""

import outbound
from handlers.api import ApiHandler, actor
from handlers.calls import CallHandler, echo_param, request_params
from models import schema
from models.lifecycle import create_csr, get_csr, get_next, history, promote, remove_next, rollback, stage_next
from models.store import load_next, load_staged


class LifecycleHandler(ApiHandler):
    """A lifecycle route: a state that forbids the change answers 409 with its code (base.ERROR_TABLE)."""


class Csr(LifecycleHandler):
    """POST a new pending key and its CSR; GET the pending CSR again."""

    body_fields = schema.CSR

    def get(self, employee, address):
        csr_pem, pending = get_csr(employee, address)
        self.write_json({"csr": csr_pem, "pending": pending})

    def post(self, employee, address):
        csr_pem, pending = create_csr(employee, address, self.json_body(), self.settings,
                                      actor=actor(self))
        self.write_json({"csr": csr_pem, "pending": pending}, 201)


class Next(LifecycleHandler):
    """GET, PUT (stage) and DELETE the next identity."""

    body_fields = schema.UPLOAD

    def get(self, employee, address):
        self.write_json({"next": get_next(employee, address)})

    def put(self, employee, address):
        view, created = stage_next(employee, address, self.json_body(), self.settings, actor=actor(self))
        self.write_json({"next": view}, 201 if created else 200)

    def delete(self, employee, address):
        remove_next(employee, address, self.settings, actor=actor(self))
        self.response.status_int = 204
        del self.response.headers["Content-Type"]  # a 204 has no body to describe


class NextHandshake(CallHandler):
    """POST .../next/handshake: the next identity against the target it would use."""

    def post(self, employee, address):
        self.json_body()  # an empty body is expected; a malformed one is still refused
        self.write_json(outbound.handshake(load_next(employee, address, self.settings), self.settings))


class NextCall(LifecycleHandler, CallHandler):
    """A call with the next identity: 409 no_next without one, remote failures 502/504 as for the current."""

    def staged(self, employee, address):
        return load_staged(employee, address, self.settings)

class NextRequest(NextCall):
    """POST .../next/request: like .../request, with the next identity."""

    body_fields = schema.REQUEST

    def post(self, employee, address):
        method, path, headers, payload = request_params(self.json_body())
        self.write_json(outbound.request(self.staged(employee, address), self.settings, method, path, headers,
                                         payload))


class NextEcho(NextCall):
    """POST .../next/echo: like .../echo, with the next identity."""

    body_fields = schema.ECHO

    def post(self, employee, address):
        send = echo_param(self.json_body())
        self.write_json(outbound.echo(self.staged(employee, address), self.settings, send))


class Promote(LifecycleHandler):
    """POST .../promote: next becomes current (409 no_next)."""

    def post(self, employee, address):
        self.json_body()
        self.write_json(promote(employee, address, self.settings, actor=actor(self)))


class Rollback(LifecycleHandler):
    """POST .../rollback: current and previous swap (409 no_previous)."""

    def post(self, employee, address):
        self.json_body()
        self.write_json(rollback(employee, address, self.settings, actor=actor(self)))


class History(LifecycleHandler):
    """GET .../history: every change, newest first."""

    def get(self, employee, address):
        self.write_json({"events": history(employee, address)})
