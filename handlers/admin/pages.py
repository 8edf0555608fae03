"""Admin pages: list, upload, detail, delete and test calls for stored identities."""

import datetime
import re
import urllib.parse

import drafts
import outbound
from dyncert.errors import InputError, RemoteError
from handlers import auth
from handlers.admin.explain import explain
from handlers.admin.forms import (
    FORM_ORDER, blank_fields, field_for, form_message, parse_headers, request_form, text_field,
    upload_form)
from handlers.admin.present import (
    TLS_VERSIONS, UTC, WARN_DAYS, call_verdict, default_trust, detail_url, last_result, lifecycle_values, matches,
    row, target_query, trusted_by)
from handlers.api import actor
from handlers.base import PageHandler, http_error
from handlers.calls import METHODS, echo_param, request_params
from models.body import check_upload
from models.entities import Conflict, NotFound
from models.lastcall import last_calls
from models.lifecycle import check_next, stage_next
from models.store import (
    delete_identity, get_entity, get_record, list_records, load_identity, load_next, put_identity)

class AdminHandler(PageHandler):
    """A page of the admin area (errors render as pages: see BaseHandler.dispatch)."""


class NotFoundPage(AdminHandler):
    """The styled 404 page for a signed-in browser (called by routes.not_found, outside any route)."""

    def show(self):
        """Render the page and return True for a signed-in caller; anonymous callers get False (JSON then)."""
        self.principal, self.auth_method = auth.identify(self.request, self.settings)
        if self.principal is None:
            return False
        self.response.status_int = 404
        self.render("not_found.html", path=self.request.path)
        return True


class List(AdminHandler):
    """GET /admin: every identity with its target and expiry."""

    def get(self):
        now = datetime.datetime.now(UTC)
        deleted = self.request.get("deleted")
        if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}/[0-9]{1,16}", deleted):
            deleted = None
        query = self.request.get("q").strip()[:200]
        entities = list_records()  # also addresses with only a pending key or a staged next
        shown = [e for e in entities if matches(e, query)]
        last = last_calls(shown)
        rows = [dict(row(e, now), last=last_result(last.get(f"{e.key.parent().id()}/{e.key.id()}"), now))
                for e in shown]
        self.render("admin/list.html", identities=rows, deleted=deleted, warn_days=WARN_DAYS, q=query,
                    total=len(entities))


class New(AdminHandler):
    """GET and POST /admin/new: the upload form (also used to replace an identity)."""

    def get(self):
        query = self.request.GET
        staging = query.get("stage") == "next"  # "stage as next": PUT .../next semantics, calls keep the current
        shown = dict(employee=query.get("employee", ""), address=query.get("address", ""), cert="",
                     ca_certs="", host=query.get("host", ""), port=query.get("port", "") or "443",
                     server_hostname=query.get("server_hostname", ""),
                     tls_version=query.get("tls_version", "TLS"))
        existing = self._existing(shown["employee"], shown["address"])
        if existing is not None and existing.ca_certs:
            shown["ca_certs"] = existing.ca_certs  # public; keeps the trust when only the cert rotates
        self.show_form(shown, {}, None if staging else existing, staging=staging)

    def post(self):
        old_draft = text_field(self.request.POST, "draft")
        staging = text_field(self.request.POST, "stage") == "next"
        owner, slot = self._draft_owner(), "next" if staging else "current"  # what a kept key is bound to
        employee, address, body, shown, errors = upload_form(self.request.POST, self.settings, owner, slot)
        # Every field is checked on its own, so one post reports every error at once; the store takes
        # the validated upload as it is (one key derivation per post).
        messages = blank_fields(employee, address, body)
        for refusal in [e for e in errors if isinstance(e, drafts.DraftRefused)]:
            errors.remove(refusal)
            messages["key"] = refusal.message  # beside the key, rather than "missing": why the kept key is not used
        upload, found = (check_next if staging else check_upload)(employee, address, body, self.settings)
        errors += found
        if not errors and not messages:
            try:
                store = stage_next if staging else put_identity
                _, created = store(employee, address, upload, self.settings, actor=actor(self))
            except (InputError, Conflict) as e:
                errors.append(e)
        if errors or messages:
            self.response.status_int = 400
            codes = {name: "missing" for name in messages}
            for error in errors:
                messages.setdefault(field_for(error), form_message(error))
                codes.setdefault(field_for(error), error.code)
            drafts.forget(old_draft)
            draft = self._keep_secrets(body, codes, drafts.Binding(owner, employee, address, slot))
            return self.show_form(shown, messages, None if staging else self._existing(employee, address), draft,
                                  staging=staging)
        drafts.forget(old_draft)
        saved = "next#rotation" if staging else "created" if created else "replaced"
        self.redirect(detail_url(employee, int(address)) + "?saved=" + saved, code=303)

    def _draft_owner(self):
        """Whom a draft is bound to: this sign-in session (its record's id) and principal."""
        record = auth.current_session(self.request, self.settings)
        return f"{self.auth_method}:{self.principal}:{record.key.id() if record is not None else '-'}"

    def _keep_secrets(self, body, codes, binding):
        """Seal the credentials for the next post unless they failed; a wrong password alone is dropped."""
        field = "pkcs12" if body.get("pkcs12") else "key"
        if not body.get(field) or codes.get(field) not in (None, "wrong_password"):
            return None
        password = field + "_password"
        kept = {field: body[field], password: None if codes.get(field) else body.get(password)}
        return drafts.keep(self.settings, kept, binding)

    def show_form(self, shown, errors, replacing, draft=None, staging=False):
        first = next((name for name in FORM_ORDER if name in errors), None)
        self.render("admin/new.html", form=shown, errors=errors, replacing=replacing, staging=staging,
                    tls_versions=TLS_VERSIONS, draft=draft, first_error=first,
                    default_trust=default_trust(self.settings),
                    draft_minutes=drafts.DRAFT_SECONDS // 60)

    @staticmethod
    def _existing(employee, address):
        """The entity being replaced, or None."""
        if not employee or not address:
            return None
        try:
            return get_entity(employee, address)
        except (InputError, NotFound):
            return None


class Detail(AdminHandler):
    """GET the detail page of one identity; subclasses POST a test call and show its result."""

    def get(self, employee, address):
        self.show(employee, address)

    def show(self, employee, address, result=None, request_values=None, echo_value=None, lifecycle=None):
        entity = get_record(employee, address)  # also an address with only a pending key or a next
        identity = row(entity)
        current = entity if identity["has_current"] else None
        name, number = identity["employee"], identity["address"]
        self.render("admin/detail.html", identity=identity, chain_pem=entity.chain_pem,
                    trusts=trusted_by(identity["has_ca_certs"], self.settings),
                    replace_url=target_query(name, number, current),
                    stage_url=target_query(name, number, current or entity.next, stage="next"),
                    saved=self.request.GET.get("saved"), tls_versions=TLS_VERSIONS,
                    default_trust=None if current else default_trust(self.settings),
                    result=result, methods=METHODS,
                    request_values=request_values or {"method": "GET", "path": "/", "headers": "", "body": ""},
                    echo_value=echo_value if echo_value is not None else "hello",
                    **lifecycle_values(entity, lifecycle or {"saved": self.request.GET.get("saved")}))

    def call(self, employee, address, kind, work, load=load_identity, **form):
        """Run one test call and re-render the page with its result (or failure)."""
        stored = load(employee, address, self.settings)  # bad ids, NotFound: error pages
        result = {"kind": kind, "slot": "next" if load is load_next else "current"}
        try:
            result["data"] = work(stored)
            result["verdict"] = call_verdict(kind, result["data"])
        except (RemoteError, InputError) as e:
            self.response.status_int = http_error(e).status
            result["error"] = self.failure(e, stored.ca_certs, self.settings)
        self.show(employee, address, result=result, **form)

    @staticmethod
    def failure(error, ca_certs=None, settings=None):
        """The failure panel: what happened and what to check, naming what this identity trusts."""
        own = isinstance(ca_certs, bytes)  # stored bundle (PEM bytes); else CA_FILE path or None
        what, check = explain(error.code, trusted_by(own, settings) if settings else "the trusted CAs", own) or (
            "The call failed.", "Read the message above.")
        # A more precise check when the library knows it (e.g. internal_error: the client chain's depth).
        return {"code": error.code, "message": error.message, "what": what,
                "check": getattr(error, "hint", None) or check}


class Test(Detail):
    """POST .../test: a handshake with the stored target."""

    def post(self, employee, address):
        self.call(employee, address, "handshake", lambda stored: outbound.handshake(stored, self.settings))


class Request(Detail):
    """POST .../request: one HTTPS request with the identity."""

    load = staticmethod(load_identity)  # the slot the request presents (rotation.RequestNext: the next one)

    def post(self, employee, address):
        values = request_form(self.request.POST)

        def work(stored):
            method, path, headers, payload = request_params(dict(values, headers=parse_headers(values["headers"])))
            return outbound.request(stored, self.settings, method, path, headers, payload)

        self.call(employee, address, "request", work, load=self.load, request_values=values)


class Echo(Detail):
    """POST .../echo: one line over a raw TLS socket."""

    def post(self, employee, address):
        send = text_field(self.request.POST, "send")

        def work(stored):
            return outbound.echo(stored, self.settings, echo_param({"send": (send or "") + "\n"}))

        self.call(employee, address, "echo", work, echo_value=send)


class Delete(AdminHandler):
    """GET a confirmation page, POST to delete."""

    def get(self, employee, address):
        self.render("admin/delete.html", identity=row(get_record(employee, address)))

    def post(self, employee, address):
        delete_identity(employee, address, actor=actor(self), settings=self.settings)
        self.redirect("/admin?" + urllib.parse.urlencode({"deleted": f"{employee}/{int(address)}"}), code=303)
