"""Employee and Address entities, and the store functions the handlers call."""

import base64
import binascii
import datetime
import hashlib
import re
import time
from dataclasses import dataclass

from google.cloud import ndb

import sealing
from dyncert import csr, targets
from dyncert.errors import InputError
from dyncert.context import parse_tls_version
from dyncert.identity import ClientIdentity, parse_ca_bundle

EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MAX_ADDRESS_ID = 2 ** 53
TLS_VERSION_NAMES = ("TLS", "TLSv1_2", "TLSv1_3")
UTC = datetime.timezone.utc


class NotFound(Exception):
    """No identity is stored under that key."""


class Employee(ndb.Model):
    """The parent of an employee's Addresses (its id is the employee name)."""

    created = ndb.DateTimeProperty(auto_now_add=True, tzinfo=UTC)


class Slot(ndb.Model):
    """One identity: certificate chain, sealed key and the peer it talks to (current, next or previous)."""

    chain_pem = ndb.TextProperty()
    sealed_key = ndb.BlobProperty()                # AES-256-GCM ciphertext of the PKCS#8 key
    wrapped_dek = ndb.BlobProperty()               # its data key, wrapped by the KEK
    kek_id = ndb.TextProperty()
    seal_version = ndb.IntegerProperty(indexed=False)  # None: v1 (entity only); 2: also target and trust
    ca_certs = ndb.TextProperty()                  # PEM bundle trusted for the peer, or None
    host = ndb.TextProperty()
    port = ndb.IntegerProperty(indexed=False)
    server_hostname = ndb.TextProperty()
    tls_version = ndb.TextProperty()
    subject = ndb.TextProperty()
    issuer = ndb.TextProperty()
    serial = ndb.TextProperty()
    not_before = ndb.DateTimeProperty(tzinfo=UTC, indexed=False)
    not_after = ndb.DateTimeProperty(tzinfo=UTC)   # indexed: the expiry check queries it
    fingerprint_sha256 = ndb.StringProperty()
    san = ndb.TextProperty(repeated=True)
    key_type = ndb.TextProperty()
    chain_length = ndb.IntegerProperty(indexed=False)
    staged = ndb.DateTimeProperty(tzinfo=UTC, indexed=False)


SLOT_FIELDS = tuple(Slot._properties)


class Pending(ndb.Model):
    """A key generated here, sealed, waiting for the certificate its CSR asks for."""

    sealed_key = ndb.BlobProperty()
    wrapped_dek = ndb.BlobProperty()
    kek_id = ndb.TextProperty()
    key_type = ndb.TextProperty()
    public_key_sha256 = ndb.TextProperty()
    subject = ndb.TextProperty()
    san = ndb.TextProperty(repeated=True)
    csr_pem = ndb.TextProperty()
    created = ndb.DateTimeProperty(tzinfo=UTC)


class Address(Slot):
    """An address: its `current` identity (the entity's own Slot fields), `next`, `previous`, `pending`.

    Entities stored before v1.1 hold only the Slot fields: they read as `current` unchanged.
    One entity holds every slot, so promote and rollback are single-entity transactions.
    """

    next = ndb.LocalStructuredProperty(Slot)
    previous = ndb.LocalStructuredProperty(Slot)
    pending = ndb.LocalStructuredProperty(Pending)
    pending_created = ndb.DateTimeProperty(tzinfo=UTC)  # indexed: the cron finds stale pending keys
    created = ndb.DateTimeProperty(auto_now_add=True, tzinfo=UTC)
    updated = ndb.DateTimeProperty(auto_now=True, tzinfo=UTC)


class Event(ndb.Model):
    """One change of an address, a child of its key (kept after the address is deleted)."""

    at = ndb.DateTimeProperty(tzinfo=UTC, indexed=False)
    actor = ndb.TextProperty()
    action = ndb.TextProperty()
    fingerprint_sha256 = ndb.TextProperty()
    previous_fingerprint_sha256 = ndb.TextProperty()
    public_key_sha256 = ndb.TextProperty()


class Conflict(Exception):
    """The address is not in a state that allows this change (409 with a stable code)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class StoredIdentity:
    """What a call needs: the unsealed identity, where to connect and what to trust."""

    employee: str
    address: int
    identity: ClientIdentity
    target: targets.Target
    ca_certs: object  # PEM bytes, or None for the app's default trust
    tls_version: str


def address_key(employee, address):
    """Key('Employee', employee, 'Address', address), after checking both ids."""
    if not isinstance(employee, str) or not EMPLOYEE_ID.match(employee):
        raise InputError("invalid_request", "The employee id must be 1-64 characters of A-Z a-z 0-9 . _ @ -.")
    if isinstance(address, str):
        # ASCII digits only: str.isdigit() and int() also take "²" (an error) and "١" (read as 1).
        address = int(address) if re.fullmatch(r"[0-9]{1,16}", address) else 0
    if isinstance(address, bool) or not isinstance(address, int) or not 1 <= address <= MAX_ADDRESS_ID:
        raise InputError("invalid_request", "The address id must be an integer from 1 to 2^53.")
    return ndb.Key(Employee, employee, Address, address)


def rfc3339(value):
    """A datetime as RFC 3339 UTC with a Z, or None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def identity_view(key, slot):
    """API.md's public view of one identity slot: metadata and target, never key material."""
    return {
        "employee": key.parent().id(), "address": key.id(),
        "subject": slot.subject, "issuer": slot.issuer, "serial": slot.serial,
        "not_before": rfc3339(slot.not_before), "not_after": rfc3339(slot.not_after),
        "fingerprint_sha256": slot.fingerprint_sha256, "san": list(slot.san),
        "key_type": slot.key_type, "chain_length": slot.chain_length,
        "host": slot.host, "port": slot.port, "server_hostname": slot.server_hostname,
        "tls_version": slot.tls_version, "has_ca_certs": bool(slot.ca_certs),
    }


def slot_summary(slot):
    """The short form of a next or previous identity in the public view."""
    if slot is None:
        return None
    return {"fingerprint_sha256": slot.fingerprint_sha256, "not_after": rfc3339(slot.not_after),
            "key_type": slot.key_type, "subject": slot.subject, "staged": rfc3339(slot.staged)}


def pending_summary(pending):
    """What a pending key is, without the key: type, when, which public key, what the CSR asks."""
    if pending is None:
        return None
    return {"key_type": pending.key_type, "created": rfc3339(pending.created),
            "public_key_sha256": pending.public_key_sha256, "subject": pending.subject,
            "san": list(pending.san)}


def public_view(entity):
    """API.md's public view of an Address (its current identity) with its lifecycle summaries."""
    return dict(identity_view(entity.key, entity), updated=rfc3339(entity.updated),
                created=rfc3339(entity.created), next=slot_summary(entity.next),
                previous=slot_summary(entity.previous), pending=pending_summary(entity.pending))


def _field(body, name, kind, default=None):
    """body[name] if it has type `kind` (absent or null gives `default`), else invalid_request."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = {str: "a string", int: "an integer"}.get(kind, kind.__name__)
        raise InputError("invalid_request", f"The field '{name}' must be {expected}.")
    return value


def identity_from_body(body, now=None):
    """Validate the credentials of a PUT body into a ClientIdentity (PEM pair or PKCS#12)."""
    pkcs12 = _field(body, "pkcs12", str)
    if pkcs12:
        try:
            data = base64.b64decode(pkcs12, validate=True)
        except (binascii.Error, ValueError):
            raise InputError("invalid_pkcs12", "The 'pkcs12' field is not valid base64.") from None
        return ClientIdentity.from_pkcs12(data, _field(body, "pkcs12_password", str), now=now)
    cert, key = _field(body, "cert", str), _field(body, "key", str)
    if not cert:
        raise InputError("invalid_request", "Give 'cert' and 'key' (PEM), or 'pkcs12' (base64).")
    if not key and "PRIVATE KEY-----" not in cert:
        raise InputError("invalid_request", "The field 'key' is required with 'cert'.")
    return ClientIdentity.from_pem(cert, key or cert, password=_field(body, "key_password", str), now=now)


def target_from_body(body, allowed_targets=""):
    """Validate host, port and server_hostname of a PUT body into a Target."""
    host = _field(body, "host", str)
    if not host:
        raise InputError("invalid_request", "The field 'host' is required.")
    port = _field(body, "port", int, 443)
    server_hostname = _field(body, "server_hostname", str) or None
    for name, value in (("host", host), ("server_hostname", server_hostname)):
        if value and ("-----" in value or "\n" in value):  # a pasted PEM: never echo it in the error
            raise InputError("invalid_target", f"Expected '{name}' to be a DNS name or an IP address, "
                                               "found multi-line or PEM text.")
    target = targets.validate_target(host, port, server_hostname)
    targets.check_allowed(target, targets.parse_allowed(allowed_targets))
    return target


def tls_version_from_body(body):
    """The stored TLS version name ("TLS", "TLSv1_2", "TLSv1_3")."""
    name = _field(body, "tls_version", str, "TLS")
    parse_tls_version(name)  # raises unsupported_tls_version with the accepted values
    return name if name in TLS_VERSION_NAMES else "TLS"


SEAL_VERSION = 2  # associated data: entity path + digest of target, trust and chain


def seal_context(key, slot=None):
    """Associated data binding a sealed key to its entity (v1) and, with `slot`, to its target and trust (v2).

    A copy of the key in another entity, or a record pointed at another host, port, SNI name,
    TLS version, CA bundle or chain outside this app, will not open.
    """
    path = ("/".join(str(part) for part in key.flat())).encode()
    if slot is None:
        return path
    digest = hashlib.sha256()
    for value in (slot.host, slot.port, slot.server_hostname, slot.tls_version, slot.ca_certs or None,
                  slot.chain_pem):
        data = b"\xff" if value is None else str(value).encode()  # length-prefixed: no two records collide
        digest.update(len(data).to_bytes(8, "big") + data)
    return b"v2|" + path + b"|" + digest.hexdigest().encode()


def pending_context(key, public_key_sha256):
    """Associated data of a pending key: its entity and its public key."""
    return b"pending|" + seal_context(key) + b"|" + public_key_sha256.encode()


def unseal_slot(kek, key, slot):
    """The PKCS#8 key of a slot, checked against its entity (and, for v2, its target and trust)."""
    context = seal_context(key, slot if slot.seal_version == SEAL_VERSION else None)
    return sealing.unseal(kek, slot.wrapped_dek, slot.sealed_key, context)


def _seal_into(slot, kek, key, key_pem):
    """Seal `key_pem` into `slot` bound to its target and trust (the slot's other fields are set)."""
    slot.seal_version = SEAL_VERSION
    slot.kek_id = kek.kek_id
    slot.wrapped_dek, slot.sealed_key = sealing.seal(kek, key_pem, seal_context(key, slot))


def _reseal_legacy(entity, kek):
    """Re-seal v1 slots with the v2 associated data (on the entity's next write; a tampered one is left)."""
    for slot in (entity, entity.next, entity.previous):
        if slot is not None and slot.chain_pem and slot.seal_version != SEAL_VERSION:
            try:
                key_pem = unseal_slot(kek, entity.key, slot)
            except sealing.UnsealError:
                continue  # stays refused when used, never silently blessed
            _seal_into(slot, kek, entity.key, key_pem)


def new_slot(identity, ca_pem, target, tls_version, kek, key, now=None):
    """A Slot for a validated identity and target, its key sealed and bound to both."""
    slot = Slot(chain_pem=identity.chain_pem.decode(), ca_certs=ca_pem,
                host=target.host, port=target.port, server_hostname=target.sni, tls_version=tls_version,
                subject=identity.subject, issuer=identity.issuer, serial=identity.serial,
                not_before=identity.not_before, not_after=identity.not_after,
                fingerprint_sha256=identity.fingerprint_sha256, san=list(identity.san),
                key_type=identity.key_type, chain_length=identity.chain_length,
                staged=now or datetime.datetime.now(UTC))
    _seal_into(slot, kek, key, identity.key_pem)
    return slot


def copy_slot(source, target=None):
    """The identity fields of `source` copied into `target` (a new Slot when None)."""
    target = target if target is not None else Slot()
    for name in SLOT_FIELDS:
        value = getattr(source, name)
        setattr(target, name, list(value) if isinstance(value, list) else value)
    return target


def has_current(entity):
    """True when the entity holds a current identity (not only a pending key or a next one)."""
    return entity is not None and bool(entity.chain_pem)


def _event(key, action, actor, after=None, before=None, public_key=None):
    """A history event for `key` (put in the same transaction as the change)."""
    return Event(parent=key, at=datetime.datetime.now(UTC), actor=actor or "unknown", action=action,
                 fingerprint_sha256=after, previous_fingerprint_sha256=before, public_key_sha256=public_key)


def _save(entity, event):
    """Write the entity and its history event (inside the caller's transaction: one commit)."""
    entity.put()
    event.put()


def _ensure_employee(key):
    """Create the parent Employee of `key` if it does not exist yet."""
    if key.parent().get() is None:
        Employee(key=key.parent()).put()


def put_identity(employee, address, body, settings, now=None, actor="app"):
    """Validate `body`, seal its key and store it as current; returns (public view, created?).

    Everything is checked before the transaction, so a bad body changes nothing. next, previous
    and pending stay as they were.
    """
    key = address_key(employee, address)
    identity = identity_from_body(body, now=now)
    ca_text = _field(body, "ca_certs", str)
    ca_pem = parse_ca_bundle(ca_text).decode() if ca_text and ca_text.strip() else None
    target = target_from_body(body, settings.allowed_targets)
    tls_version = tls_version_from_body(body)
    kek = sealing.kek_from_settings(settings)
    slot = new_slot(identity, ca_pem, target, tls_version, kek, key)

    @ndb.transactional()
    def write():
        existing = key.get()
        if existing is None:
            _ensure_employee(key)
        entity = existing or Address(key=key)
        created = not has_current(existing)
        before = None if created else existing.fingerprint_sha256
        copy_slot(slot, entity)
        _reseal_legacy(entity, kek)
        _save(entity, _event(key, "created" if created else "replaced", actor, slot.fingerprint_sha256, before))
        return entity, created

    entity, created = write()
    return public_view(entity), created


def get_record(employee, address):
    """The Address entity whatever it holds (maybe only a pending key or a next identity), or NotFound."""
    entity = address_key(employee, address).get()
    if entity is None:
        raise NotFound(f"Nothing is stored for {employee}/{address}.")
    return entity


def get_entity(employee, address):
    """The Address entity with a current identity, or NotFound."""
    entity = address_key(employee, address).get()
    if not has_current(entity):
        raise NotFound(f"No identity is stored for {employee}/{address}.")
    return entity


def stored_identity(entity, slot, settings):
    """A slot's identity with its key unsealed, ready for a dyncert call."""
    key_pem = unseal_slot(sealing.kek_from_settings(settings), entity.key, slot)
    identity = ClientIdentity.from_trusted_pem(slot.chain_pem.encode(), key_pem)
    target = targets.Target(slot.host, slot.port, slot.server_hostname)
    ca = slot.ca_certs.encode() if slot.ca_certs else settings.ca_file  # None: dyncert's default trust
    return StoredIdentity(entity.key.parent().id(), entity.key.id(), identity, target, ca,
                          slot.tls_version or "TLS")


def load_identity(employee, address, settings):
    """The current identity with its key unsealed (one entity read: never a mix of two slots)."""
    entity = get_entity(employee, address)
    return stored_identity(entity, entity, settings)


def load_next(employee, address, settings):
    """The staged next identity with its key unsealed, or NotFound."""
    entity = get_record(employee, address)
    if entity.next is None:
        raise NotFound(f"No next identity is staged for {employee}/{address}.")
    return stored_identity(entity, entity.next, settings)


def list_identities():
    """Public views of every stored identity, ordered by employee then address."""
    return [public_view(e) for e in list_entities()]


def list_entities():
    """Every Address entity with a current identity (for pages that show more than the public view)."""
    return [e for e in Address.query().order(Address.key).fetch() if has_current(e)]


def list_records():
    """Every Address entity, also those with only a pending key or a staged next (the admin list shows all)."""
    return Address.query().order(Address.key).fetch()


def count_identities():
    """How many identities are stored."""
    return Address.query(Address.fingerprint_sha256 > "").count()  # skips pending-only addresses


def delete_identity(employee, address, actor="app"):
    """Delete one address with all its slots; NotFound if absent. The Employee and the history stay."""
    key = address_key(employee, address)

    @ndb.transactional()
    def remove():
        entity = key.get()
        if entity is None:
            raise NotFound(f"No identity is stored for {employee}/{address}.")
        key.delete()
        _event(key, "deleted", actor, None, entity.fingerprint_sha256).put()

    remove()


# --- key lifecycle (API.md v1.1) -----------------------------------------------------------------

def create_csr(employee, address, body, settings, actor="app"):
    """Generate a key and CSR, seal the key at once, keep it pending; returns (csr PEM, pending summary)."""
    key = address_key(employee, address)
    made = csr.new_key_and_csr(body.get("key_type"), body.get("subject"), body.get("san"))
    kek = sealing.kek_from_settings(settings)
    wrapped_dek, sealed_key = sealing.seal(kek, made.key_pem, pending_context(key, made.public_key_sha256))
    now = datetime.datetime.now(UTC)
    pending = Pending(sealed_key=sealed_key, wrapped_dek=wrapped_dek, kek_id=kek.kek_id, key_type=made.key_type,
                      public_key_sha256=made.public_key_sha256, subject=made.subject, san=made.san,
                      csr_pem=made.csr_pem, created=now)

    @ndb.transactional()
    def write():
        entity = key.get()
        if entity is None:
            _ensure_employee(key)
            entity = Address(key=key)
        entity.pending, entity.pending_created = pending, now
        _reseal_legacy(entity, kek)
        _save(entity, _event(key, "csr_created", actor, public_key=made.public_key_sha256))

    write()
    return made.csr_pem, pending_summary(pending)


def get_csr(employee, address):
    """The pending key's CSR and summary, or NotFound."""
    entity = get_record(employee, address)
    if entity.pending is None:
        raise NotFound(f"No key is pending for {employee}/{address}.")
    return entity.pending.csr_pem, pending_summary(entity.pending)


def _completes_pending(body):
    """True for a PUT .../next body that brings only the certificate for the pending key."""
    return bool(body.get("cert")) and not body.get("key") and not body.get("pkcs12") \
        and "PRIVATE KEY-----" not in str(body.get("cert"))


def _next_target(body, current, settings):
    """Target fields of a next identity: the body's, each defaulting to the current identity's."""
    merged = {name: body.get(name) for name in ("host", "port", "server_hostname", "tls_version", "ca_certs")}
    if current is not None:
        defaults = {"host": current.host, "port": current.port, "tls_version": current.tls_version,
                    "ca_certs": current.ca_certs}
        if merged["host"] is None:  # a new host brings its own SNI name (default: itself)
            defaults["server_hostname"] = current.server_hostname
        merged = {k: v if v is not None else defaults.get(k) for k, v in merged.items()}
    ca_text = _field(merged, "ca_certs", str)
    ca_pem = parse_ca_bundle(ca_text).decode() if ca_text and ca_text.strip() else None
    return ca_pem, target_from_body(merged, settings.allowed_targets), tls_version_from_body(merged)


def stage_next(employee, address, body, settings, now=None, actor="app"):
    """Stage a next identity: the certificate for the pending key, or a full upload; returns (view, created?)."""
    key = address_key(employee, address)
    entity = key.get()
    kek = sealing.kek_from_settings(settings)
    completing = _completes_pending(body)
    if completing:
        if entity is None or entity.pending is None:
            raise Conflict("no_pending", f"No key is pending for {employee}/{address}: POST .../csr first, "
                                         "or give 'key' (or 'pkcs12') with the certificate.")
        pending = entity.pending
        key_pem = sealing.unseal(kek, pending.wrapped_dek, pending.sealed_key,
                                 pending_context(key, pending.public_key_sha256))
        identity = ClientIdentity.from_pem(_field(body, "cert", str), key_pem, now=now)  # key_mismatch if foreign
    else:
        identity = identity_from_body(body, now=now)
    ca_pem, target, tls_version = _next_target(body, entity if has_current(entity) else None, settings)
    slot = new_slot(identity, ca_pem, target, tls_version, kek, key)

    @ndb.transactional()
    def write():
        record = key.get()
        if completing and (record is None or record.pending is None
                           or record.pending.public_key_sha256 != pending.public_key_sha256):
            raise Conflict("no_pending", "The pending key changed while the certificate was checked; retry.")
        if record is None:
            _ensure_employee(key)
            record = Address(key=key)
        before = record.next.fingerprint_sha256 if record.next is not None else None
        record.next = slot
        if completing:
            record.pending, record.pending_created = None, None
        _reseal_legacy(record, kek)
        _save(record, _event(key, "next_staged", actor, slot.fingerprint_sha256, before))
        return before is None

    created = write()
    return identity_view(key, slot), created


def get_next(employee, address):
    """The public view of the staged next identity, or NotFound."""
    entity = get_record(employee, address)
    if entity.next is None:
        raise NotFound(f"No next identity is staged for {employee}/{address}.")
    return identity_view(entity.key, entity.next)


def _switch(employee, address, settings, actor, change):
    """Apply change(entity) -> (action, fingerprint after, before) to one Address in one transaction,
    re-sealing a legacy record and recording the event; `change` raises when the switch cannot be."""
    key = address_key(employee, address)
    kek = sealing.kek_from_settings(settings)

    @ndb.transactional()
    def write():
        entity = key.get()
        action, after, before = change(entity)
        _reseal_legacy(entity, kek)
        _save(entity, _event(key, action, actor, after, before))
        return entity

    return write()


def remove_next(employee, address, settings, actor="app"):
    """Drop the staged next identity; NotFound if none."""
    def change(entity):
        if entity is None or entity.next is None:
            raise NotFound(f"No next identity is staged for {employee}/{address}.")
        before, entity.next = entity.next.fingerprint_sha256, None
        return "next_removed", None, before

    _switch(employee, address, settings, actor, change)


def promote(employee, address, settings, actor="app"):
    """next becomes current, current becomes previous, in one transaction; 409 no_next."""
    def change(entity):
        if entity is None or entity.next is None:
            raise Conflict("no_next", f"No next identity is staged for {employee}/{address}: PUT .../next first.")
        before = entity.fingerprint_sha256 if has_current(entity) else None
        entity.previous = copy_slot(entity) if has_current(entity) else entity.previous
        copy_slot(entity.next, entity)
        entity.next = None
        return "promoted", entity.fingerprint_sha256, before

    entity = _switch(employee, address, settings, actor, change)
    previous = identity_view(entity.key, entity.previous) if entity.previous is not None else None
    return {"current": public_view(entity), "previous": previous}


def rollback(employee, address, settings, actor="app"):
    """current and previous swap, in one transaction; 409 no_previous."""
    def change(entity):
        if entity is None or entity.previous is None or not has_current(entity):
            raise Conflict("no_previous", f"No previous identity is kept for {employee}/{address}.")
        before = entity.fingerprint_sha256
        old_current = copy_slot(entity)
        copy_slot(entity.previous, entity)
        entity.previous = old_current
        return "rolled_back", entity.fingerprint_sha256, before

    entity = _switch(employee, address, settings, actor, change)
    return {"current": public_view(entity), "previous": identity_view(entity.key, entity.previous)}


MAX_HISTORY = 1000  # events shown per address (newest first)


def history(employee, address):
    """The address's change events, newest first (also after it was deleted)."""
    key = address_key(employee, address)
    # Ancestor only (no sort) needs no composite index; ids are scattered, so read all, then sort by time.
    events = Event.query(ancestor=key).fetch()
    events.sort(key=lambda e: e.at or datetime.datetime.min.replace(tzinfo=UTC), reverse=True)
    return [event_view(e) for e in events[:MAX_HISTORY]]


def event_view(event):
    """A history event as API.md shows it (fingerprints only, never key material)."""
    view = {"at": rfc3339_precise(event.at), "actor": event.actor, "action": event.action,
            "fingerprint_sha256": event.fingerprint_sha256,
            "previous_fingerprint_sha256": event.previous_fingerprint_sha256}
    if event.public_key_sha256:
        view["public_key_sha256"] = event.public_key_sha256
    return view


def rfc3339_precise(value):
    """RFC 3339 UTC with milliseconds (events of one minute stay in order when read back)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


PENDING_WARN_DAYS = 30  # a CSR unanswered this long was probably forgotten


def expiry_report(now=None, warn_days=30):
    """Identities already expired and those expiring within `warn_days`, soonest first, and stale pending keys.

    Each entry says whether a next identity is staged (`next_staged`: false means nothing is ready
    to promote); `stale_pending` lists keys generated more than PENDING_WARN_DAYS ago that still
    wait for their certificate.
    """
    now = now or datetime.datetime.now(UTC)
    horizon = now + datetime.timedelta(days=warn_days)
    report = {"expired": [], "expiring": [], "stale_pending": []}
    for entity in Address.query(Address.not_after <= horizon).order(Address.not_after).fetch():
        if entity.not_after is None:  # null sorts below every date: a pending-only address
            continue
        entry = {"identity": f"{entity.key.parent().id()}/{entity.key.id()}",
                 "subject": entity.subject, "not_after": rfc3339(entity.not_after),
                 "days_left": (entity.not_after - now).days, "next_staged": entity.next is not None}
        report["expired" if entity.not_after <= now else "expiring"].append(entry)
    stale = now - datetime.timedelta(days=PENDING_WARN_DAYS)
    for entity in Address.query(Address.pending_created <= stale).order(Address.pending_created).fetch():
        if entity.pending is None or entity.pending_created is None:
            continue
        report["stale_pending"].append({
            "identity": f"{entity.key.parent().id()}/{entity.key.id()}", "subject": entity.pending.subject,
            "created": rfc3339(entity.pending_created), "days_pending": (now - entity.pending_created).days})
    return report


def upload_errors(employee, address, body, settings, now=None):
    """Every InputError a PUT of `body` would meet, each part checked on its own (forms show them all)."""
    errors = []
    ca_text = body.get("ca_certs")
    checks = (lambda: address_key(employee, address), lambda: identity_from_body(body, now=now),
              lambda: parse_ca_bundle(ca_text) if isinstance(ca_text, str) and ca_text.strip() else None,
              lambda: target_from_body(body, settings.allowed_targets), lambda: tls_version_from_body(body))
    for check in checks:
        try:
            check()
        except InputError as e:
            errors.append(e)
    return errors


class LastCall(ndb.Model):
    """The last test call of one identity (when and what; never a secret). Id: 'employee/address'."""

    at = ndb.DateTimeProperty(tzinfo=UTC, indexed=False)
    call = ndb.TextProperty()      # handshake, request or echo
    outcome = ndb.TextProperty()   # "ok" or the error code
    status = ndb.IntegerProperty(indexed=False)  # the HTTP status of a request
    elapsed_ms = ndb.FloatProperty(indexed=False)


RECORD_EVERY = 10.0  # seconds: a repeated, unchanged outcome is not written again sooner (calls stay fast)
_recorded = {}


def record_call(employee, address, call, outcome, status=None, elapsed_ms=None, now=None):
    """Store the last call's result for the list page; unchanged repeats within RECORD_EVERY are skipped."""
    name = f"{employee}/{address}"
    clock = time.monotonic()
    previous = _recorded.get(name)
    if previous and previous[0] == (call, outcome, status) and clock - previous[1] < RECORD_EVERY:
        return False
    LastCall(id=name, at=now or datetime.datetime.now(UTC), call=call, outcome=outcome, status=status,
             elapsed_ms=elapsed_ms).put()
    _recorded[name] = ((call, outcome, status), clock)
    return True


def last_calls(entities):
    """{'employee/address': LastCall} for the given Address entities (one batch read)."""
    keys = [ndb.Key(LastCall, f"{e.key.parent().id()}/{e.key.id()}") for e in entities]
    return {k.id(): c for k, c in zip(keys, ndb.get_multi(keys)) if c is not None}
