"""The admin forms: read a multipart post into API bodies, and put each upload error beside its field."""

import base64
import re

import drafts
from dyncert import csr
from dyncert.errors import InputError

# The form has no password boxes of its own to mark: a password's error is shown beside its key or file.
SHOWN_BESIDE = {"key_password": "key", "pkcs12_password": "pkcs12"}

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


def without_private_keys(text):
    """`text` with every private key PEM block removed, so a form never echoes one back."""
    return PRIVATE_KEY_BLOCK.sub("", text or "").strip()


def text_field(post, name):
    """A text field of the form ('' when absent or when a file came instead)."""
    value = post.get(name, "")
    return value if isinstance(value, str) else ""


def file_field(post, name):
    """The bytes of an uploaded file field, or None when no file was chosen."""
    value = post.get(name)
    if value is None or isinstance(value, str) or not getattr(value, "filename", ""):
        return None
    data = value.file.read()
    return data or None


def pem_text(data, code, what, field=None):
    """Uploaded PEM bytes as text, or an InputError with `code` about `field`."""
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise InputError(code, f"The {what} file is not a PEM text file (convert DER with "
                               f"'openssl x509 -inform der' or upload PKCS#12 instead).", field) from None


def upload_form(post, settings=None, owner="", slot="current"):
    """Read the upload form into (employee, address, API body, values to show again, errors).

    With no key or PKCS#12 in this post, those kept sealed under the form's draft id are used, when
    the draft was made by `owner` (the session) for this employee/address and `slot` (drafts.take).
    """
    employee = text_field(post, "employee").strip()
    address = text_field(post, "address").strip()
    cert = text_field(post, "cert")
    key = text_field(post, "key")
    ca_certs = text_field(post, "ca_certs")
    host = text_field(post, "host").strip()
    port = text_field(post, "port").strip() or "443"
    server_hostname = text_field(post, "server_hostname").strip()
    tls_version = text_field(post, "tls_version").strip() or "TLS"
    shown = dict(employee=employee, address=address, cert=without_private_keys(cert),
                 ca_certs=without_private_keys(ca_certs), host=host, port=port,
                 server_hostname=server_hostname, tls_version=tls_version)
    cert_file, key_file = file_field(post, "certfile"), file_field(post, "keyfile")
    ca_file, pkcs12_file = file_field(post, "cafile"), file_field(post, "pkcs12file")
    body = {"key_password": text_field(post, "key_password") or None,
            "pkcs12_password": text_field(post, "pkcs12_password") or None,
            "host": host, "server_hostname": server_hostname or None, "tls_version": tls_version}
    errors = []
    if not (key.strip() or key_file or pkcs12_file):  # no new credentials: take those kept by a failed post
        kept, refusal = drafts.take(settings, text_field(post, "draft"),
                                    drafts.Binding(owner, employee, address, slot)) if settings else ({}, None)
        errors += [refusal] if refusal else []
        key = kept.get("key") or ""
        if kept.get("pkcs12"):
            pkcs12_file = base64.b64decode(kept["pkcs12"])
        for name in ("key_password", "pkcs12_password"):
            body[name] = body[name] or kept.get(name)
    try:
        if cert_file:
            cert = pem_text(cert_file, "invalid_certificate", "certificate", "cert")
            shown["cert"] = without_private_keys(cert)
        if key_file:
            key = pem_text(key_file, "invalid_key", "key", "key")
        if ca_file:
            ca_certs = pem_text(ca_file, "invalid_ca_certs", "CA bundle", "ca_certs")
            shown["ca_certs"] = without_private_keys(ca_certs)
    except InputError as e:
        errors.append(e)
    if pkcs12_file:
        if cert.strip() or key.strip():
            errors.append(InputError("invalid_request", "Give a certificate and key, or a PKCS#12 file "
                                                        "('pkcs12'), not both.", "pkcs12"))
        body["pkcs12"] = base64.b64encode(pkcs12_file).decode()
    else:
        body.update(cert=cert or None, key=key or None)
    body["ca_certs"] = ca_certs or None
    if re.fullmatch(r"[0-9]{1,5}", port):  # ASCII digits: int() would take "١" and fail on "²"
        body["port"] = int(port)
    else:
        errors.append(InputError("invalid_request", "The field 'port' must be a number from 1 to 65535.", "port"))
    return employee, address, body, shown, errors


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


def field_for(error):
    """The form field an error is shown beside, by the error's `field` ('general' when it has none on the form)."""
    name = getattr(error, "field", None)  # a store Conflict has none
    name = SHOWN_BESIDE.get(name, name)
    return name if name in FORM_ORDER else "general"


def request_form(post):
    """The values of the request form, as typed."""
    return {"method": text_field(post, "method") or "GET", "path": text_field(post, "path") or "/",
            "headers": text_field(post, "headers"), "body": text_field(post, "body")}


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


def lines(text):
    """Non-blank lines of a textarea, stripped."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def csr_form(post):
    """The CSR form as typed, and the API body it makes."""
    names = ("key_type", "CN", "O", "OU", "C", "ST", "L", "dns", "email", "uri")
    shown = {name: text_field(post, name).strip() for name in names}
    body = {"key_type": shown["key_type"] or csr.DEFAULT_KEY_TYPE,
            "subject": {k: shown[k] for k in ("CN", "O", "OU", "C", "ST", "L") if shown[k]},
            "san": {k: lines(shown[k]) for k in ("dns", "email", "uri")}}
    return shown, body


def next_target_form(post):
    """The target fields of the signed-certificate form (shown when there is no current identity to default to)."""
    names = ("host", "server_hostname", "tls_version", "ca_certs")
    body = {name: text_field(post, name).strip() or None for name in names}
    port = text_field(post, "port").strip()
    if port and not re.fullmatch(r"[0-9]{1,5}", port):  # ASCII digits: int() would take "١" and fail on "²"
        raise InputError("invalid_request", "The port must be a number from 1 to 65535.", "port")
    body["port"] = int(port) if port else None
    return body
