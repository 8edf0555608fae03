"""Employee and Address entities, and the store functions the handlers call."""

import base64
import binascii
import datetime
import re
import time
from dataclasses import dataclass

from google.cloud import ndb

import sealing
from dyncert import targets
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


class Address(ndb.Model):
    """A client identity (certificate chain + sealed key) and the peer it talks to."""

    chain_pem = ndb.TextProperty(required=True)
    sealed_key = ndb.BlobProperty(required=True)   # AES-256-GCM ciphertext of the PKCS#8 key
    wrapped_dek = ndb.BlobProperty(required=True)  # its data key, wrapped by the KEK
    kek_id = ndb.TextProperty()
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
    created = ndb.DateTimeProperty(auto_now_add=True, tzinfo=UTC)
    updated = ndb.DateTimeProperty(auto_now=True, tzinfo=UTC)


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


def public_view(entity):
    """API.md's public view of an Address: metadata and target, never key material."""
    return {
        "employee": entity.key.parent().id(), "address": entity.key.id(),
        "subject": entity.subject, "issuer": entity.issuer, "serial": entity.serial,
        "not_before": rfc3339(entity.not_before), "not_after": rfc3339(entity.not_after),
        "fingerprint_sha256": entity.fingerprint_sha256, "san": list(entity.san),
        "key_type": entity.key_type, "chain_length": entity.chain_length,
        "host": entity.host, "port": entity.port, "server_hostname": entity.server_hostname,
        "tls_version": entity.tls_version, "has_ca_certs": bool(entity.ca_certs),
        "updated": rfc3339(entity.updated), "created": rfc3339(entity.created),
    }


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


def put_identity(employee, address, body, settings, now=None):
    """Validate `body`, seal its key and store it; returns (public view, created?).

    Everything is checked before the transaction, so a bad body changes nothing.
    """
    key = address_key(employee, address)
    identity = identity_from_body(body, now=now)
    ca_text = _field(body, "ca_certs", str)
    ca_pem = parse_ca_bundle(ca_text).decode() if ca_text and ca_text.strip() else None
    target = target_from_body(body, settings.allowed_targets)
    tls_version = tls_version_from_body(body)
    kek = sealing.kek_from_settings(settings)
    wrapped_dek, sealed_key = sealing.seal(kek, identity.key_pem, seal_context(key))
    entity = Address(
        key=key, chain_pem=identity.chain_pem.decode(), sealed_key=sealed_key,
        wrapped_dek=wrapped_dek, kek_id=kek.kek_id, ca_certs=ca_pem,
        host=target.host, port=target.port, server_hostname=target.sni,
        tls_version=tls_version, subject=identity.subject, issuer=identity.issuer, serial=identity.serial,
        not_before=identity.not_before, not_after=identity.not_after,
        fingerprint_sha256=identity.fingerprint_sha256, san=list(identity.san),
        key_type=identity.key_type, chain_length=identity.chain_length)

    @ndb.transactional()
    def write():
        existing = key.get()
        if existing is None and key.parent().get() is None:
            Employee(key=key.parent()).put()
        if existing is not None:
            entity.created = existing.created
        entity.put()
        return existing is None

    created = write()
    return public_view(entity), created


def seal_context(key):
    """Associated data binding a sealed key to its entity: a copy elsewhere will not open."""
    return ("/".join(str(part) for part in key.flat())).encode()


def get_entity(employee, address):
    """The Address entity, or NotFound."""
    entity = address_key(employee, address).get()
    if entity is None:
        raise NotFound(f"No identity is stored for {employee}/{address}.")
    return entity


def load_identity(employee, address, settings):
    """The stored identity with its key unsealed, ready for a dyncert call."""
    entity = get_entity(employee, address)
    key_pem = sealing.unseal(sealing.kek_from_settings(settings), entity.wrapped_dek,
                             entity.sealed_key, seal_context(entity.key))
    identity = ClientIdentity.from_trusted_pem(entity.chain_pem.encode(), key_pem)
    target = targets.Target(entity.host, entity.port, entity.server_hostname)
    ca = entity.ca_certs.encode() if entity.ca_certs else settings.ca_file  # None: dyncert's default trust
    return StoredIdentity(employee, int(address), identity, target, ca, entity.tls_version or "TLS")


def list_identities():
    """Public views of every stored identity, ordered by employee then address."""
    return [public_view(e) for e in Address.query().order(Address.key).fetch()]


def list_entities():
    """Every Address entity (for pages that show more than the public view)."""
    return Address.query().order(Address.key).fetch()


def count_identities():
    """How many identities are stored."""
    return Address.query().count()


def delete_identity(employee, address):
    """Delete one identity; NotFound if absent. The Employee stays (it may own others)."""
    key = address_key(employee, address)

    @ndb.transactional()
    def remove():
        if key.get() is None:
            raise NotFound(f"No identity is stored for {employee}/{address}.")
        key.delete()

    remove()


def expiry_report(now=None, warn_days=30):
    """Identities already expired and those expiring within `warn_days`, soonest first."""
    now = now or datetime.datetime.now(UTC)
    horizon = now + datetime.timedelta(days=warn_days)
    report = {"expired": [], "expiring": []}
    for entity in Address.query(Address.not_after <= horizon).order(Address.not_after).fetch():
        entry = {"identity": f"{entity.key.parent().id()}/{entity.key.id()}",
                 "subject": entity.subject, "not_after": rfc3339(entity.not_after),
                 "days_left": (entity.not_after - now).days}
        report["expired" if entity.not_after <= now else "expiring"].append(entry)
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
