"""An upload body (API PUT, PUT .../next, admin form alike) validated once into an Upload, or errors with their field."""

import base64
import binascii
from dataclasses import dataclass

from google.cloud import ndb

from dyncert import targets
from dyncert.context import parse_tls_version
from dyncert.errors import InputError
from dyncert.identity import ClientIdentity, parse_ca_bundle
from dyncert.signers import SignerIdentity
from models.entities import address_key

KEY_FIELDS = ("key", "key_password", "pkcs12", "pkcs12_password")  # what 'kms_key' stands in for

TLS_VERSION_NAMES = ("TLS", "TLSv1_2", "TLSv1_3")
TARGET_FIELDS = ("host", "port", "server_hostname", "tls_version", "ca_certs")

# Where a credentials error belongs: the certificate's problems beside 'cert', the key's beside 'key'.
PEM_FIELD_OF_CODE = {"invalid_key": "key", "wrong_password": "key_password"}


@dataclass(frozen=True)
class Upload:
    """A validated upload: what the store seals and writes, with nothing left to check."""

    key: ndb.Key
    identity: ClientIdentity | SignerIdentity | None  # None when `cert_pem` completes the pending key (PUT .../next)
    ca_pem: str | None               # the normalized CA bundle, or None for the app's default trust
    target: targets.Target
    tls_version: str
    cert_pem: str | None = None


def field(body, name, kind, default=None):
    """body[name] if it has type `kind` (absent or null gives `default`), else invalid_request."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = {str: "a string", int: "an integer"}.get(kind, kind.__name__)
        raise InputError("invalid_request", f"The field '{name}' must be {expected}.", name)
    return value


def completes_pending(body):
    """True for a PUT .../next body that brings only the certificate for the pending key."""
    return bool(body.get("cert")) and not body.get("key") and not body.get("pkcs12") \
        and not body.get("kms_key") and "PRIVATE KEY-----" not in str(body.get("cert"))


def identity_from_body(body, now=None, settings=None):
    """Validate the credentials of a PUT body into a ClientIdentity (PEM pair or PKCS#12), or a
    SignerIdentity whose key is a Cloud KMS key version ('kms_key')."""
    if body.get("kms_key") is not None:
        return kms_identity_from_body(body, settings, now=now)
    pkcs12 = field(body, "pkcs12", str)
    if pkcs12:
        password = field(body, "pkcs12_password", str)
        try:
            data = base64.b64decode(pkcs12, validate=True)
        except (binascii.Error, ValueError):
            raise InputError("invalid_pkcs12", "The 'pkcs12' field is not valid base64.", "pkcs12") from None
        try:
            return ClientIdentity.from_pkcs12(data, password, now=now)
        except InputError as e:
            e.field = e.field or ("pkcs12_password" if e.code == "wrong_password" else "pkcs12")
            raise
    cert, key = field(body, "cert", str), field(body, "key", str)
    password = field(body, "key_password", str)
    if not cert:
        raise InputError("invalid_request", "Give 'cert' and 'key' (PEM), or 'pkcs12' (base64).", "cert")
    if not key and "PRIVATE KEY-----" not in cert:
        raise InputError("invalid_request", "The field 'key' is required with 'cert'.", "key")
    try:
        return ClientIdentity.from_pem(cert, key or cert, password=password, now=now)
    except InputError as e:
        e.field = e.field or PEM_FIELD_OF_CODE.get(e.code, "cert")
        raise


def ca_from_body(body):
    """The normalized CA bundle of a body (text), or None for the app's default trust."""
    ca_text = field(body, "ca_certs", str)
    if not ca_text or not ca_text.strip():
        return None
    try:
        return parse_ca_bundle(ca_text).decode()
    except InputError as e:
        e.field = "ca_certs"
        raise


def kms_identity_from_body(body, settings, now=None):
    """'cert' and 'kms_key': a SignerIdentity checked against the key version (key_mismatch if foreign)."""
    import kmskeys
    name = field(body, "kms_key", str)
    given = [f for f in KEY_FIELDS if body.get(f) is not None]
    if given:
        raise InputError("invalid_request", f"Give 'kms_key' or '{given[0]}', not both: a key held in Cloud KMS "
                                            "never comes with the upload.", given[0])
    cert = field(body, "cert", str)
    if not cert:
        raise InputError("invalid_request", "The field 'cert' (PEM) is required with 'kms_key'.", "cert")
    if settings is None:
        raise InputError("invalid_request", "'kms_key' is not accepted here.", "kms_key")
    try:
        signer = kmskeys.checked_signer(name, settings)
    except InputError as e:
        e.field = e.field or "kms_key"
        raise
    try:
        return SignerIdentity(cert, signer, now=now)
    except InputError as e:
        e.field = e.field or "cert"
        raise


def target_from_body(body, allowed_targets=""):
    """Validate host, port and server_hostname of a PUT body into a Target."""
    host = field(body, "host", str)
    if not host:
        raise InputError("invalid_request", "The field 'host' is required.", "host")
    port = field(body, "port", int, 443)
    server_hostname = field(body, "server_hostname", str) or None
    for name, value in (("host", host), ("server_hostname", server_hostname)):
        if value and ("-----" in value or "\n" in value):  # a pasted PEM: never echo it in the error
            raise InputError("invalid_target", f"Expected '{name}' to be a DNS name or an IP address, "
                                               "found multi-line or PEM text.", name)
    target = targets.validate_target(host, port, server_hostname)
    targets.check_allowed(target, targets.parse_allowed(allowed_targets))
    return target


def tls_version_from_body(body):
    """The stored TLS version name ("TLS", "TLSv1_2", "TLSv1_3")."""
    name = field(body, "tls_version", str, "TLS")
    try:
        parse_tls_version(name)  # raises unsupported_tls_version with the accepted values
    except InputError as e:
        e.field = "tls_version"
        raise
    return name if name in TLS_VERSION_NAMES else "TLS"


def with_defaults(body, current):
    """A next identity's target fields: the body's, each defaulting to the current identity's (a Slot or None)."""
    if current is None:
        return body
    defaults = {"host": current.host, "port": current.port, "tls_version": current.tls_version,
                "ca_certs": current.ca_certs}
    if body.get("host") is None:  # a new host brings its own SNI name (default: itself)
        defaults["server_hostname"] = current.server_hostname
    merged = dict(body)
    for name in TARGET_FIELDS:
        if merged.get(name) is None and defaults.get(name) is not None:
            merged[name] = defaults[name]
    return merged


def check_upload(employee, address, body, settings, now=None, current=None, completing=False):
    """Validate `body` once: (Upload, []) or (None, every InputError, each checked on its own, with its field).

    `current`: for a next identity, the current Slot its target fields default to. `completing`: the
    body brings only the certificate for the pending key, checked against it when the key is unsealed.
    """
    body = with_defaults(body, current)
    results, errors = {}, []
    checks = (("key", lambda: address_key(employee, address)),
              ("identity", lambda: None if completing else identity_from_body(body, now=now, settings=settings)),
              ("cert_pem", lambda: field(body, "cert", str) if completing else None),
              ("ca_pem", lambda: ca_from_body(body)),
              ("target", lambda: target_from_body(body, settings.allowed_targets)),
              ("tls_version", lambda: tls_version_from_body(body)))
    for name, check in checks:
        try:
            results[name] = check()
        except InputError as e:
            errors.append(e)
    return (None, errors) if errors else (Upload(**results), [])


def parse_upload(employee, address, body, settings, now=None, current=None, completing=False):
    """check_upload, raising its first error (the API answers one)."""
    upload, errors = check_upload(employee, address, body, settings, now, current, completing)
    if errors:
        raise errors[0]
    return upload
