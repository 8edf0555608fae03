"""Validation of an upload body (API PUT and admin form alike) into dyncert's typed values."""

import base64
import binascii

from dyncert import targets
from dyncert.context import parse_tls_version
from dyncert.errors import InputError
from dyncert.identity import ClientIdentity, parse_ca_bundle
from dyncert.signers import SignerIdentity
from models.entities import address_key

KEY_FIELDS = ("key", "key_password", "pkcs12", "pkcs12_password")  # what 'kms_key' stands in for

TLS_VERSION_NAMES = ("TLS", "TLSv1_2", "TLSv1_3")


def field(body, name, kind, default=None):
    """body[name] if it has type `kind` (absent or null gives `default`), else invalid_request."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = {str: "a string", int: "an integer"}.get(kind, kind.__name__)
        raise InputError("invalid_request", f"The field '{name}' must be {expected}.")
    return value


def identity_from_body(body, now=None, settings=None):
    """Validate the credentials of a PUT body into a ClientIdentity (PEM pair or PKCS#12), or a
    SignerIdentity whose key is a Cloud KMS key version ('kms_key')."""
    if body.get("kms_key") is not None:
        return kms_identity_from_body(body, settings, now=now)
    pkcs12 = field(body, "pkcs12", str)
    if pkcs12:
        try:
            data = base64.b64decode(pkcs12, validate=True)
        except (binascii.Error, ValueError):
            raise InputError("invalid_pkcs12", "The 'pkcs12' field is not valid base64.") from None
        return ClientIdentity.from_pkcs12(data, field(body, "pkcs12_password", str), now=now)
    cert, key = field(body, "cert", str), field(body, "key", str)
    if not cert:
        raise InputError("invalid_request", "Give 'cert' and 'key' (PEM), or 'pkcs12' (base64).")
    if not key and "PRIVATE KEY-----" not in cert:
        raise InputError("invalid_request", "The field 'key' is required with 'cert'.")
    return ClientIdentity.from_pem(cert, key or cert, password=field(body, "key_password", str), now=now)


def kms_identity_from_body(body, settings, now=None):
    """'cert' and 'kms_key': a SignerIdentity checked against the key version (key_mismatch if foreign)."""
    import kmskeys
    name = field(body, "kms_key", str)
    given = [f for f in KEY_FIELDS if body.get(f) is not None]
    if given:
        raise InputError("invalid_request", f"Give 'kms_key' or '{given[0]}', not both: a key held in Cloud KMS "
                                            "never comes with the upload.")
    cert = field(body, "cert", str)
    if not cert:
        raise InputError("invalid_request", "The field 'cert' (PEM) is required with 'kms_key'.")
    if settings is None:
        raise InputError("invalid_request", "'kms_key' is not accepted here.")
    return SignerIdentity(cert, kmskeys.checked_signer(name, settings), now=now)


def target_from_body(body, allowed_targets=""):
    """Validate host, port and server_hostname of a PUT body into a Target."""
    host = field(body, "host", str)
    if not host:
        raise InputError("invalid_request", "The field 'host' is required.")
    port = field(body, "port", int, 443)
    server_hostname = field(body, "server_hostname", str) or None
    for name, value in (("host", host), ("server_hostname", server_hostname)):
        if value and ("-----" in value or "\n" in value):  # a pasted PEM: never echo it in the error
            raise InputError("invalid_target", f"Expected '{name}' to be a DNS name or an IP address, "
                                               "found multi-line or PEM text.")
    target = targets.validate_target(host, port, server_hostname)
    targets.check_allowed(target, targets.parse_allowed(allowed_targets))
    return target


def tls_version_from_body(body):
    """The stored TLS version name ("TLS", "TLSv1_2", "TLSv1_3")."""
    name = field(body, "tls_version", str, "TLS")
    parse_tls_version(name)  # raises unsupported_tls_version with the accepted values
    return name if name in TLS_VERSION_NAMES else "TLS"


def upload_errors(employee, address, body, settings, now=None):
    """Every InputError a PUT of `body` would meet, each part checked on its own (forms show them all)."""
    errors = []
    ca_text = body.get("ca_certs")
    checks = (lambda: address_key(employee, address), lambda: identity_from_body(body, now=now, settings=settings),
              lambda: parse_ca_bundle(ca_text) if isinstance(ca_text, str) and ca_text.strip() else None,
              lambda: target_from_body(body, settings.allowed_targets), lambda: tls_version_from_body(body))
    for check in checks:
        try:
            check()
        except InputError as e:
            errors.append(e)
    return errors
