"""Admin pages: list, upload, detail, delete and test calls for stored identities."""

import base64
import datetime
import re
import urllib.parse

import drafts
import models
import outbound
from dyncert import context, csr
from dyncert.errors import InputError, RemoteError
from handlers import auth
from handlers.api import actor
from handlers.base import ApiError, PageHandler
from handlers.calls import METHODS, echo_param, request_params

UTC = datetime.timezone.utc
WARN_DAYS = 30  # an identity this close to expiry is flagged on the list
MAX_FORM_BYTES = 512 * 1024  # the API's 256 KiB, plus multipart overhead and a CA file
TLS_VERSIONS = (("TLS", "TLS 1.2 or 1.3 (default)"), ("TLSv1_2", "TLS 1.2 only"), ("TLSv1_3", "TLS 1.3 only"))

# Which form field an upload error belongs beside.
FIELD_OF_CODE = {
    "invalid_certificate": "cert", "certificate_expired": "cert",
    "certificate_not_yet_valid": "cert", "key_mismatch": "cert",
    "invalid_key": "key", "wrong_password": "key",
    "invalid_pkcs12": "pkcs12", "invalid_ca_certs": "ca_certs",
    "invalid_target": "host", "target_not_allowed": "host",
    "unsupported_tls_version": "tls_version",
}

# Plain-language explanation and what to check, per failure code of a test call.
EXPLANATIONS = {
    "unknown_ca": (
        "The server's certificate does not chain to a CA this identity trusts.",
        "The server's certificate does not chain to {trusts} — check ca_certs (upload the CA that "
        "issued the server's certificate, with any intermediates the server does not send){or_ca_file}."),
    "hostname_mismatch": (
        "The server's certificate is valid but not issued for the name we asked for.",
        "Check the SNI name (server_hostname): it must match a DNS or IP entry in the server "
        "certificate's subjectAltName. Connecting by IP address usually needs the DNS name here."),
    "peer_rejected_certificate": (
        "The server refused the client certificate this identity presented.",
        "Check that the server trusts the CA that issued this client certificate, that the full "
        "chain (leaf + intermediates) was uploaded, and that the certificate is not revoked or "
        "expired in the server's view."),
    "protocol_version": (
        "The server and this app share no TLS version.",
        "Check the TLS version setting of this identity (TLS, TLSv1_2, TLSv1_3) against what the "
        "server supports; TLS 1.0 and 1.1 are never offered."),
    "signer_failed": (
        "The signer holding this identity's private key (Cloud KMS, an HSM) did not sign.",
        "Check that the signer is reachable and allowed to sign with this key (IAM, token login), "
        "and read the message above for its own error."),
    "handshake_failed": (
        "The TLS handshake failed for a reason other than the usual ones.",
        "Check that the port speaks TLS (not plain HTTP), that a cipher suite is shared, and read "
        "the message above for OpenSSL's reason."),
    "invalid_response": (
        "The TLS handshake succeeded, but the reply was not HTTP/1.1: the port speaks TLS but not HTTP.",
        "Check the port: it may be a raw TLS service (use Echo for it) rather than the HTTPS endpoint, "
        "or an HTTP/2-only server. The handshake itself is fine."),
    "peer_certificate_expired": (
        "The server presented a certificate (or chain) that has expired.",
        "The server's operator must renew its certificate; check also that this app's clock is right. "
        "Trusting another CA does not help."),
    "peer_certificate_not_yet_valid": (
        "The server presented a certificate that is not valid yet.",
        "Check the clocks: the server's certificate starts in the future as this app sees it (a new "
        "certificate installed early, or a clock off on either side)."),
    "connection_refused": (
        "Nothing accepted the TCP connection at the stored host and port.",
        "Check the host and port of this identity and that the server is running and reachable "
        "from App Engine (firewall, Serverless VPC Access for private addresses)."),
    "dns_failure": (
        "The host name could not be resolved.",
        "Check the spelling of the host; private names need Serverless VPC Access or a public "
        "DNS record."),
    "connection_reset": (
        "The server closed the connection abruptly.",
        "Servers often reset instead of sending an alert when they reject a client certificate "
        "or a TLS version: check both, then the server's own log."),
    "timeout": (
        "The server did not answer in time.",
        "Check that the host and port are right and reachable (a firewall that drops packets "
        "shows up as a timeout), and that the server answers the request or echo line. A server "
        "that sends slowly is cut off at CALL_DEADLINE (30 s unless set) for the whole call."),
    "target_not_allowed": (
        "This app refuses to connect to the stored target.",
        "Link-local and metadata-server addresses are always refused; when ALLOWED_TARGETS is "
        "set, the host:port must match one of its patterns."),
    "invalid_target": (
        "The stored target is not a valid host and port.",
        "Replace the identity with a corrected host, port and SNI name."),
    "invalid_request": (
        "The test request was not valid.",
        "Check the method, that the path starts with '/', and that each header line is "
        "'Name: value'."),
}

# The form's fields in page order (the first with an error gets the focus), and their labels.
FORM_ORDER = ("employee", "address", "cert", "key", "pkcs12", "ca_certs", "host", "port", "server_hostname",
              "tls_version")
FORM_LABELS = {"cert": "certificate chain", "key": "private key", "key_password": "key password",
               "pkcs12": "PKCS#12 file", "pkcs12_password": "PKCS#12 password", "ca_certs": "CA bundle",
               "host": "host", "port": "port", "server_hostname": "SNI name", "tls_version": "TLS version"}
# What an empty required field says (form words, not the API's field names).
BLANK = {
    "employee": "Enter the employee (1–64 characters of A–Z a–z 0–9 . _ @ -).",
    "address": "Enter the address id (an integer from 1).",
    "cert": "Paste the certificate chain or choose a certificate file — or use a PKCS#12 file below instead.",
    "key": "Paste the private key or choose a key file.",
    "host": "Enter the server's host name or IP address.",
}
QUOTED_FIELD = re.compile(r"(?:[Tt]he field )?'(\w+)'")

PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S)
FIELD_NAME = re.compile(r"'(\w+)'")


def default_trust(settings):
    """What an identity without its own CA bundle trusts, in words (as the home page says it)."""
    if settings.ca_file:
        return f"the app's CA file ({settings.ca_file})"
    trust = context.default_trust()
    where = " and ".join(filter(None, (trust["cafile"], trust["capath"] and f"hashed directory {trust['capath']}")))
    return f"the system's trust store ({where})" if where else "the system's trust store"


def trusted_by(has_ca_certs, settings):
    """What one identity's calls trust: its own CA bundle when stored, else the default."""
    return "the CA bundle stored with this identity" if has_ca_certs else default_trust(settings)


def detail_url(employee, address):
    """The detail page of one identity."""
    return f"/admin/employees/{urllib.parse.quote(str(employee), safe='')}/addresses/{address}"


def without_private_keys(text):
    """`text` with every private key PEM block removed, so a form never echoes one back."""
    return PRIVATE_KEY_BLOCK.sub("", text or "").strip()


def expiry(not_before, not_after, now=None):
    """Validity status of a certificate: state, label and percent of its window elapsed (5% steps)."""
    now = now or datetime.datetime.now(UTC)
    total = (not_after - not_before).total_seconds()
    elapsed = (now - not_before).total_seconds()
    fraction = min(1.0, max(0.0, elapsed / total)) if total > 0 else 1.0
    percent = int(round(fraction * 20)) * 5
    remaining = not_after - now
    if remaining.total_seconds() <= 0:
        days = (-remaining).days
        label, state = "expired", "expired"
        detail = "expired today" if days == 0 else f"expired {days} day{'s' if days != 1 else ''} ago"
    elif elapsed < 0:
        label, state, detail = "not yet valid", "future", f"valid from {models.rfc3339(not_before)}"
    elif remaining <= datetime.timedelta(days=WARN_DAYS):
        days = remaining.days
        label = "expires today" if days == 0 else f"expires in {days} day{'s' if days != 1 else ''}"
        state, detail = "expiring", f"until {models.rfc3339(not_after)}"
    else:
        label, state, detail = "valid", "valid", f"until {models.rfc3339(not_after)}"
    return {"state": state, "label": label, "detail": detail, "percent": percent}


def row(entity, now=None):
    """The public view of an entity with its expiry status and page URL (also without a current identity)."""
    view = models.public_view(entity)
    current = models.has_current(entity)
    view["has_current"] = current
    view["expiry"] = expiry(entity.not_before, entity.not_after, now) if current else None
    view["holds"] = None if current else holdings(entity)
    view["shown"] = shown_slot(entity)
    view["url"] = detail_url(view["employee"], view["address"])
    return view


def holdings(entity):
    """What an address without a current identity holds, in words: 'no current identity: next staged'."""
    held = [name for name, slot in (("next staged", entity.next), ("pending key", entity.pending)) if slot]
    return "no current identity" + (": " + ", ".join(held) if held else "")


def shown_slot(entity):
    """What the list shows for an address: its current identity, else its next, else its pending key's request."""
    slot = entity if models.has_current(entity) else entity.next
    if slot is not None:
        return {"subject": slot.subject, "key_type": slot.key_type, "host": slot.host, "port": slot.port,
                "server_hostname": slot.server_hostname, "fingerprint_sha256": slot.fingerprint_sha256}
    pending = entity.pending
    return {"subject": pending.subject if pending else None, "key_type": pending.key_type if pending else None,
            "host": None, "port": None, "server_hostname": None, "fingerprint_sha256": None}


def target_query(employee, address, slot, **extra):
    """The upload form's query: the address and, when there is one, the slot's target (never 'None')."""
    query = {"employee": employee, "address": address}
    if slot is not None:
        query.update(host=slot.host or "", port=slot.port or "", server_hostname=slot.server_hostname or "",
                     tls_version=slot.tls_version or "TLS")
    return "/admin/new?" + urllib.parse.urlencode(dict(query, **extra))


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
        entities = models.list_records()  # also addresses with only a pending key or a staged next
        shown = [e for e in entities if matches(e, query)]
        last = models.last_calls(shown)
        rows = [dict(row(e, now), last=last_result(last.get(f"{e.key.parent().id()}/{e.key.id()}"), now))
                for e in shown]
        self.render("admin/list.html", identities=rows, deleted=deleted, warn_days=WARN_DAYS, q=query,
                    total=len(entities))


def matches(entity, query):
    """True when `query` (case-insensitive) is in the identity's name, subject, issuer, target or fingerprint."""
    if not query:
        return True
    haystack = " ".join(str(v or "") for v in (
        f"{entity.key.parent().id()}/{entity.key.id()}", entity.subject, entity.issuer, entity.host,
        f"{entity.host}:{entity.port}", entity.server_hostname, entity.fingerprint_sha256,
        *(shown_slot(entity).values()), entity.pending and entity.pending.subject))
    return query.lower() in haystack.lower()


def ago(moment, now):
    """'just now', '5 min ago', '3 h ago', '2 days ago'."""
    seconds = (now - moment).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"


def last_result(record, now):
    """The list page's view of a LastCall record, or None."""
    if record is None:
        return None
    what = record.call + (f" {record.status}" if record.status else "")
    return {"ok": record.outcome == "ok", "outcome": record.outcome, "what": what,
            "at": models.rfc3339(record.at), "ago": ago(record.at, now)}


def _text(post, name):
    """A text field of the form ('' when absent or when a file came instead)."""
    value = post.get(name, "")
    return value if isinstance(value, str) else ""


def _file(post, name):
    """The bytes of an uploaded file field, or None when no file was chosen."""
    value = post.get(name)
    if value is None or isinstance(value, str) or not getattr(value, "filename", ""):
        return None
    data = value.file.read()
    return data or None


def _pem_text(data, code, what):
    """Uploaded PEM bytes as text, or an InputError with `code`."""
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise InputError(code, f"The {what} file is not a PEM text file (convert DER with "
                               f"'openssl x509 -inform der' or upload PKCS#12 instead).") from None


def upload_form(post, settings=None):
    """Read the upload form into (employee, address, API body, pkcs12 used?, values to show again, errors).

    With no key or PKCS#12 in this post, those kept sealed under the form's draft id are used.
    """
    employee = _text(post, "employee").strip()
    address = _text(post, "address").strip()
    cert = _text(post, "cert")
    key = _text(post, "key")
    ca_certs = _text(post, "ca_certs")
    host = _text(post, "host").strip()
    port = _text(post, "port").strip() or "443"
    server_hostname = _text(post, "server_hostname").strip()
    tls_version = _text(post, "tls_version").strip() or "TLS"
    shown = dict(employee=employee, address=address, cert=without_private_keys(cert),
                 ca_certs=without_private_keys(ca_certs), host=host, port=port,
                 server_hostname=server_hostname, tls_version=tls_version)
    cert_file, key_file = _file(post, "certfile"), _file(post, "keyfile")
    ca_file, pkcs12_file = _file(post, "cafile"), _file(post, "pkcs12file")
    body = {"key_password": _text(post, "key_password") or None,
            "pkcs12_password": _text(post, "pkcs12_password") or None,
            "host": host, "server_hostname": server_hostname or None, "tls_version": tls_version}
    errors = []
    if not (key.strip() or key_file or pkcs12_file):  # no new credentials: take those kept by a failed post
        kept = drafts.take(settings, _text(post, "draft")) if settings else {}
        key = kept.get("key") or ""
        if kept.get("pkcs12"):
            pkcs12_file = base64.b64decode(kept["pkcs12"])
        for name in ("key_password", "pkcs12_password"):
            body[name] = body[name] or kept.get(name)
    try:
        if cert_file:
            cert = _pem_text(cert_file, "invalid_certificate", "certificate")
            shown["cert"] = without_private_keys(cert)
        if key_file:
            key = _pem_text(key_file, "invalid_key", "key")
        if ca_file:
            ca_certs = _pem_text(ca_file, "invalid_ca_certs", "CA bundle")
            shown["ca_certs"] = without_private_keys(ca_certs)
    except InputError as e:
        errors.append(e)
    if pkcs12_file:
        if cert.strip() or key.strip():
            errors.append(InputError("invalid_request", "Give a certificate and key, or a PKCS#12 file "
                                                        "('pkcs12'), not both."))
        body["pkcs12"] = base64.b64encode(pkcs12_file).decode()
    else:
        body.update(cert=cert or None, key=key or None)
    body["ca_certs"] = ca_certs or None
    if re.fullmatch(r"[0-9]{1,5}", port):  # ASCII digits: int() would take "١" and fail on "²"
        body["port"] = int(port)
    else:
        errors.append(InputError("invalid_request", "The field 'port' must be a number from 1 to 65535."))
    return employee, address, body, bool(pkcs12_file), shown, errors


def blank_fields(employee, address, body):
    """Form-worded messages for required fields left empty."""
    blank = {}
    for name, value in (("employee", employee), ("address", address), ("host", body.get("host"))):
        if not value:
            blank[name] = BLANK[name]
    if not body.get("pkcs12"):
        if not (body.get("cert") or "").strip():
            blank["cert"] = BLANK["cert"]
        if not (body.get("key") or "").strip() and "PRIVATE KEY-----" not in (body.get("cert") or ""):
            blank["key"] = BLANK["key"]
    return blank


def form_message(error):
    """An upload error in the form's words: field labels instead of the API's quoted field names."""
    def label(match):
        name = match.group(1)
        if name not in FORM_LABELS:
            return match.group(0)
        return ("The " if match.group(0).startswith("The") else "the ") + FORM_LABELS[name]
    return QUOTED_FIELD.sub(label, error.message)


def field_for(error, pkcs12_used):
    """The form field an InputError is shown beside ('general' when none fits)."""
    if error.code == "invalid_request":
        message = error.message.lower()
        for name in ("employee", "address"):
            if f"{name} id" in message:
                return name
        match = FIELD_NAME.search(error.message)
        if match and match.group(1) in ("cert", "key", "pkcs12", "host", "port", "server_hostname",
                                        "tls_version", "ca_certs"):
            return match.group(1)
        return "general"
    if error.code in ("invalid_key", "wrong_password") and pkcs12_used:
        return "pkcs12"
    if error.code == "invalid_target" and "port" in error.message.lower() and "host" not in error.message.lower():
        return "port"
    return FIELD_OF_CODE.get(error.code, "general")


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
        self.check_csrf()
        if (self.request.content_length or 0) > MAX_FORM_BYTES:
            raise ApiError(413, "too_large", f"The upload is larger than {MAX_FORM_BYTES // 1024} KiB.")
        old_draft = _text(self.request.POST, "draft")
        staging = _text(self.request.POST, "stage") == "next"
        employee, address, body, pkcs12_used, shown, errors = upload_form(self.request.POST, self.settings)
        # Every field is checked on its own, so one post reports every error at once.
        messages = blank_fields(employee, address, body)
        errors += models.upload_errors(employee, address, body, self.settings)
        if not errors and not messages:
            try:
                store = models.stage_next if staging else models.put_identity
                _, created = store(employee, address, body, self.settings, actor=actor(self))
            except (InputError, models.Conflict) as e:
                errors.append(e)
        if errors or messages:
            self.response.status_int = 400
            codes = {name: "missing" for name in messages}
            for error in errors:
                messages.setdefault(field_for(error, pkcs12_used), form_message(error))
                codes.setdefault(field_for(error, pkcs12_used), error.code)
            drafts.forget(old_draft)
            draft = self._keep_secrets(body, codes)
            return self.show_form(shown, messages, None if staging else self._existing(employee, address), draft,
                                  staging=staging)
        drafts.forget(old_draft)
        saved = "next#rotation" if staging else "created" if created else "replaced"
        self.redirect(detail_url(employee, int(address)) + "?saved=" + saved, code=303)

    def _keep_secrets(self, body, codes):
        """Seal the credentials for the next post unless they failed; a wrong password alone is dropped."""
        field = "pkcs12" if body.get("pkcs12") else "key"
        if not body.get(field) or codes.get(field) not in (None, "wrong_password"):
            return None
        password = field + "_password"
        kept = {field: body[field], password: None if codes.get(field) else body.get(password)}
        return drafts.keep(self.settings, kept)

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
            return models.get_entity(employee, address)
        except (InputError, models.NotFound):
            return None


def request_form(post):
    """The values of the request form, as typed."""
    return {"method": _text(post, "method") or "GET", "path": _text(post, "path") or "/",
            "headers": _text(post, "headers"), "body": _text(post, "body")}


def parse_headers(text):
    """'Name: value' lines into a dict (blank lines skipped)."""
    headers = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise InputError("invalid_request", f"Header line {number} is not 'Name: value'.")
        headers[name.strip()] = value.strip()
    return headers


class Detail(AdminHandler):
    """GET the detail page of one identity; subclasses POST a test call and show its result."""

    def get(self, employee, address):
        self.show(employee, address)

    def show(self, employee, address, result=None, request_values=None, echo_value=None, lifecycle=None):
        entity = models.get_record(employee, address)  # also an address with only a pending key or a next
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

    def call(self, employee, address, kind, work, load=models.load_identity, **form):
        """Run one test call and re-render the page with its result (or failure)."""
        self.check_csrf()
        stored = load(employee, address, self.settings)  # bad ids, NotFound: error pages
        result = {"kind": kind, "slot": "next" if load is models.load_next else "current"}
        try:
            result["data"] = work(stored)
        except RemoteError as e:
            self.response.status_int = 504 if e.code == "timeout" else 502
            result["error"] = self.failure(e, stored.ca_certs, self.settings)
        except InputError as e:
            self.response.status_int = 400
            result["error"] = self.failure(e, stored.ca_certs, self.settings)
        self.show(employee, address, result=result, **form)

    @staticmethod
    def failure(error, ca_certs=None, settings=None):
        """The failure panel: what happened and what to check, naming what this identity trusts."""
        what, check = EXPLANATIONS.get(error.code, ("The call failed.", "Read the message above."))
        if error.code == "unknown_ca":
            own = isinstance(ca_certs, bytes)  # stored bundle (PEM bytes); else CA_FILE path or None
            check = check.format(trusts=trusted_by(own, settings) if settings else "the trusted CAs",
                                 or_ca_file="" if own else ", or add that CA to CA_FILE for every identity")
        # A more precise check when the library knows it (e.g. internal_error: the client chain's depth).
        return {"code": error.code, "message": error.message, "what": what,
                "check": getattr(error, "hint", None) or check}


class Test(Detail):
    """POST .../test: a handshake with the stored target."""

    def post(self, employee, address):
        self.call(employee, address, "handshake", lambda stored: outbound.handshake(stored, self.settings))


class Request(Detail):
    """POST .../request: one HTTPS request with the identity."""

    def post(self, employee, address):
        values = request_form(self.request.POST)

        def work(stored):
            method, path, headers, payload = request_params(dict(values, headers=parse_headers(values["headers"])))
            return outbound.request(stored, self.settings, method, path, headers, payload)

        self.call(employee, address, "request", work, request_values=values)


class Echo(Detail):
    """POST .../echo: one line over a raw TLS socket."""

    def post(self, employee, address):
        send = _text(self.request.POST, "send")

        def work(stored):
            return outbound.echo(stored, self.settings, echo_param({"send": (send or "") + "\n"}))

        self.call(employee, address, "echo", work, echo_value=send)


class Delete(AdminHandler):
    """GET a confirmation page, POST to delete."""

    def get(self, employee, address):
        self.render("admin/delete.html", identity=row(models.get_record(employee, address)))

    def post(self, employee, address):
        self.check_csrf()
        models.delete_identity(employee, address, actor=actor(self))
        self.redirect("/admin?" + urllib.parse.urlencode({"deleted": f"{employee}/{int(address)}"}), code=303)


# --- key lifecycle: slots, CSR, next, promote, rollback, history -----------------------------------

def slot_row(entity, slot, now=None):
    """A next or previous slot's public view with its expiry status (None when the slot is empty)."""
    if slot is None:
        return None
    view = models.identity_view(entity.key, slot)
    view["expiry"] = expiry(slot.not_before, slot.not_after, now)
    view["staged"] = models.rfc3339(slot.staged)
    return view


def lifecycle_values(entity, lifecycle):
    """What the detail page shows about rotation: slots, pending key and CSR, history, form state."""
    now = datetime.datetime.now(UTC)
    pending = entity.pending
    return {"next": slot_row(entity, entity.next, now), "previous": slot_row(entity, entity.previous, now),
            "pending": models.pending_summary(pending), "csr_pem": pending.csr_pem if pending else None,
            "history": models.history(entity.key.parent().id(), entity.key.id()), "key_types": csr.KEY_TYPES,
            "csr_form": lifecycle.get("csr_form") or {"key_type": csr.DEFAULT_KEY_TYPE, "CN": common_name(
                entity.subject or (entity.next and entity.next.subject) or (pending and pending.subject))},
            "lifecycle_error": lifecycle.get("error"), "lifecycle_saved": lifecycle.get("saved"),
            "next_form": lifecycle.get("next_form") or {}}


def common_name(subject):
    """The CN of a subject, RFC 4514 or openssl order (a default for the next CSR), or ''."""
    match = re.search(r"(?:^|,)\s*CN=((?:[^,\\]|\\.)*)", subject or "")
    return match.group(1).replace("\\", "") if match else ""


def lines(text):
    """Non-blank lines of a textarea, stripped."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def csr_form(post):
    """The CSR form as typed, and the API body it makes."""
    shown = {name: _text(post, name).strip() for name in ("key_type", "CN", "O", "OU", "C", "ST", "L",
                                                          "dns", "email", "uri")}
    body = {"key_type": shown["key_type"] or csr.DEFAULT_KEY_TYPE,
            "subject": {k: shown[k] for k in ("CN", "O", "OU", "C", "ST", "L") if shown[k]},
            "san": {k: lines(shown[k]) for k in ("dns", "email", "uri")}}
    return shown, body


class LifecycleAction(Detail):
    """A lifecycle form on the detail page: a refused change re-renders the page with the reason."""

    def refused(self, employee, address, error, **lifecycle):
        self.response.status_int = 409 if isinstance(error, models.Conflict) else 400
        self.show(employee, address, lifecycle=dict(lifecycle, error={"code": error.code, "message": error.message}))


class GenerateCsr(LifecycleAction):
    """POST .../csr: generate a key and CSR (the key is sealed at once); GET downloads the CSR."""

    def get(self, employee, address):
        csr_pem, _ = models.get_csr(employee, address)
        self.response.content_type = "application/pkcs10"
        self.response.headers["Content-Disposition"] = f'attachment; filename="{employee}-{int(address)}.csr"'
        self.response.text = csr_pem

    def post(self, employee, address):
        self.check_csrf()
        models.get_record(employee, address)  # the page exists only for a stored address
        shown, body = csr_form(self.request.POST)
        try:
            models.create_csr(employee, address, body, self.settings, actor=actor(self))
        except InputError as e:
            return self.refused(employee, address, e, csr_form=shown)
        self.redirect(detail_url(employee, int(address)) + "?saved=csr#rotation", code=303)


def next_target_form(post):
    """The target fields of the signed-certificate form (shown when there is no current identity to default to)."""
    body = {name: _text(post, name).strip() or None for name in ("host", "server_hostname", "tls_version", "ca_certs")}
    port = _text(post, "port").strip()
    if port and not re.fullmatch(r"[0-9]{1,5}", port):  # ASCII digits: int() would take "١" and fail on "²"
        raise InputError("invalid_request", "The port must be a number from 1 to 65535.")
    body["port"] = int(port) if port else None
    return body


class UploadNext(LifecycleAction):
    """POST .../next: the signed certificate for the pending key becomes the next identity."""

    def post(self, employee, address):
        self.check_csrf()
        if (self.request.content_length or 0) > MAX_FORM_BYTES:
            raise ApiError(413, "too_large", f"The upload is larger than {MAX_FORM_BYTES // 1024} KiB.")
        cert = _text(self.request.POST, "cert")
        cert_file = _file(self.request.POST, "certfile")
        typed = {name: _text(self.request.POST, name).strip() for name in ("host", "port", "server_hostname",
                                                                             "tls_version")}
        try:
            if cert_file:
                cert = _pem_text(cert_file, "invalid_certificate", "certificate")
            if not cert.strip():
                raise InputError("invalid_request", "Paste the signed certificate or choose its file.")
            if "PRIVATE KEY-----" in cert:  # this form completes the pending key: it takes no key
                raise InputError("invalid_request", "Give only the certificate chain here, no private key.")
            models.stage_next(employee, address, dict(next_target_form(self.request.POST), cert=cert), self.settings,
                              actor=actor(self))
        except (InputError, models.Conflict) as e:
            return self.refused(employee, address, e, next_form=typed)  # the server as typed (no CA: may hold a key)
        self.redirect(detail_url(employee, int(address)) + "?saved=next#rotation", code=303)


class TestNext(Detail):
    """POST .../next/test: a handshake with the next identity against the target it would use."""

    def post(self, employee, address):
        self.call(employee, address, "handshake", lambda stored: outbound.handshake(stored, self.settings),
                  load=models.load_next)


class Confirm(AdminHandler):
    """GET a page saying what promote, rollback or discarding next will change; POST does it."""

    action = None  # "promote", "rollback" or "discard"

    def get(self, employee, address):
        entity = models.get_record(employee, address)  # promote also suits an address with only a next
        now = datetime.datetime.now(UTC)
        self.render("admin/confirm.html", action=self.action, identity=row(entity, now),
                    next=slot_row(entity, entity.next, now), previous=slot_row(entity, entity.previous, now))

    def post(self, employee, address):
        self.check_csrf()
        who = actor(self)
        try:
            if self.action == "promote":
                models.promote(employee, address, self.settings, actor=who)
            elif self.action == "rollback":
                models.rollback(employee, address, self.settings, actor=who)
            else:
                models.remove_next(employee, address, self.settings, actor=who)
        except models.Conflict as e:
            raise ApiError(409, e.code, e.message) from None
        self.redirect(detail_url(employee, int(address)) + f"?saved={self.action}#rotation", code=303)


class Promote(Confirm):
    action = "promote"


class Rollback(Confirm):
    action = "rollback"


class DiscardNext(Confirm):
    action = "discard"
