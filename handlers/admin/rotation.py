"""Admin key rotation: generate a CSR, upload the signed certificate as next, test it, promote, roll back."""

import datetime

import outbound
from dyncert.errors import InputError
from handlers.admin.forms import csr_form, file_field, next_target_form, pem_text, text_field
from handlers.admin.pages import AdminHandler, Detail, Request
from handlers.admin.present import UTC, detail_url, row, slot_row
from handlers.api import actor
from handlers.base import http_error
from models.entities import Conflict
from models.lifecycle import create_csr, get_csr, promote, remove_next, rollback, stage_next
from models.store import get_record, load_next

class LifecycleAction(Detail):
    """A lifecycle form on the detail page: a refused change re-renders the page with the reason."""

    def refused(self, employee, address, error, **lifecycle):
        self.response.status_int = http_error(error).status
        self.show(employee, address, lifecycle=dict(lifecycle, error={"code": error.code, "message": error.message}))


class GenerateCsr(LifecycleAction):
    """POST .../csr: generate a key and CSR (the key is sealed at once); GET downloads the CSR."""

    def get(self, employee, address):
        csr_pem, _ = get_csr(employee, address)
        self.response.content_type = "application/pkcs10"
        self.response.headers["Content-Disposition"] = f'attachment; filename="{employee}-{int(address)}.csr"'
        self.response.text = csr_pem

    def post(self, employee, address):
        get_record(employee, address)  # the page exists only for a stored address
        shown, body = csr_form(self.request.POST)
        try:
            create_csr(employee, address, body, self.settings, actor=actor(self))
        except InputError as e:
            return self.refused(employee, address, e, csr_form=shown)
        self.redirect(detail_url(employee, int(address)) + "?saved=csr#rotation", code=303)


class UploadNext(LifecycleAction):
    """POST .../next: the signed certificate for the pending key becomes the next identity."""

    def post(self, employee, address):
        cert = text_field(self.request.POST, "cert")
        cert_file = file_field(self.request.POST, "certfile")
        names = ("host", "port", "server_hostname", "tls_version")
        typed = {name: text_field(self.request.POST, name).strip() for name in names}
        try:
            if cert_file:
                cert = pem_text(cert_file, "invalid_certificate", "certificate")
            if not cert.strip():
                raise InputError("invalid_request", "Paste the signed certificate or choose its file.")
            if "PRIVATE KEY-----" in cert:  # this form completes the pending key: it takes no key
                raise InputError("invalid_request", "Give only the certificate chain here, no private key.")
            stage_next(employee, address, dict(next_target_form(self.request.POST), cert=cert), self.settings,
                       actor=actor(self))
        except (InputError, Conflict) as e:
            return self.refused(employee, address, e, next_form=typed)  # the server as typed (no CA: may hold a key)
        self.redirect(detail_url(employee, int(address)) + "?saved=next#rotation", code=303)


class TestNext(Detail):
    """POST .../next/test: a handshake with the next identity against the target it would use."""

    def post(self, employee, address):
        self.call(employee, address, "handshake", lambda stored: outbound.handshake(stored, self.settings),
                  load=load_next)


class RequestNext(Request):
    """POST .../next/request: the HTTPS request form of the Test-next panel, with the next identity."""

    load = staticmethod(load_next)


class Confirm(AdminHandler):
    """GET a page saying what promote, rollback or discarding next will change; POST does it."""

    action = None  # "promote", "rollback" or "discard"

    def get(self, employee, address):
        entity = get_record(employee, address)  # promote also suits an address with only a next
        now = datetime.datetime.now(UTC)
        self.render("admin/confirm.html", action=self.action, identity=row(entity, now),
                    next=slot_row(entity, entity.next, now), previous=slot_row(entity, entity.previous, now))

    def post(self, employee, address):
        who = actor(self)  # a state that forbids the change: 409 with its code (base.ERROR_TABLE)
        if self.action == "promote":
            promote(employee, address, self.settings, actor=who)
        elif self.action == "rollback":
            rollback(employee, address, self.settings, actor=who)
        else:
            remove_next(employee, address, self.settings, actor=who)
        self.redirect(detail_url(employee, int(address)) + f"?saved={self.action}#rotation", code=303)


class Promote(Confirm):
    action = "promote"


class Rollback(Confirm):
    action = "rollback"


class DiscardNext(Confirm):
    action = "discard"
