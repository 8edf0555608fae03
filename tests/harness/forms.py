"""The admin upload form as a browser posts it, and the uploads tests post through it."""

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from .app import token_of


KEY_PASSWORD = "correct-horse-battery-staple-42"


def fingerprint(chain_pem):
    """SHA-256 of the leaf certificate of a PEM chain, lower-case hex."""
    return x509.load_pem_x509_certificate(chain_pem.encode()).fingerprint(hashes.SHA256()).hex()


def key_lines(key_pem):
    """The base64 lines of a PEM key (what must never appear on a page)."""
    return [line for line in key_pem.splitlines() if line and "-----" not in line]


def form_fields(upload, **changes):
    """The upload form's text fields for an API body."""
    fields = {"employee": "asalieri", "address": "1", "cert": upload["cert"], "key": upload["key"],
              "key_password": "", "ca_certs": upload["ca_certs"], "host": upload["host"],
              "port": str(upload["port"]), "server_hostname": "", "tls_version": "TLS"}
    fields.update(changes)
    return fields


def csrf(app):
    """This browser's CSRF token (shown by the upload page; bound to the browser, not its cookie's copy)."""
    return token_of(app.get("/admin/new"))


def post_upload(app, fields, files=(), status=303, token=None):
    """POST the upload form as multipart/form-data, as a browser does."""
    params = dict(fields, csrf_token=csrf(app) if token is None else token)
    return app.post("/admin/new", params, upload_files=list(files), content_type="multipart/form-data",
                    status=status)


def pkcs12_blob(password=b"p12-secret-pass"):
    """A PKCS#12 file for a fresh identity, and the leaf's fingerprint."""
    leaf = trustme.CA().issue_cert("dave@example.com", common_name="dave")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    blob = pkcs12.serialize_key_and_certificates(b"dave", key, cert, None,
                                                 serialization.BestAvailableEncryption(password))
    return blob, cert.fingerprint(hashes.SHA256()).hex()


def encrypted(key_pem, password):
    """`key_pem` re-encrypted under `password` (PKCS#8)."""
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(password.encode())).decode()


def stored(admin):
    """The identities the JSON API lists."""
    return admin.get("/api/v1/identities").json["identities"]
