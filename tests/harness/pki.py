"""Test PKI made at run time with trustme (never committed): CAs, server and client certificates.

Values named `*_pem` are bytes. Server files on disk are fine here: they are made by the
test run, for loopback peers only. Client keys stay in memory (what dyncert is for).
"""

import dataclasses
import datetime
import hashlib
import os
import ssl

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

RSA = trustme.KeyType.RSA
EC = trustme.KeyType.ECDSA
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


@dataclasses.dataclass
class Credentials:
    """A certificate chain (leaf first) and its unencrypted PKCS#8 key, as PEM bytes."""

    cert_pem: bytes
    key_pem: bytes = dataclasses.field(repr=False)
    leaf: trustme.LeafCert = dataclasses.field(repr=False)

    @property
    def leaf_pem(self):
        """The leaf certificate alone."""
        return self.leaf.cert_chain_pems[0].bytes()

    @property
    def fingerprint_sha256(self):
        """sha256 hex of the leaf DER (what a peer reports)."""
        return fingerprint(self.leaf_pem)

    @property
    def combined_pem(self):
        """Chain followed by key in one PEM (the `certfile` with no `keyfile` form)."""
        return self.cert_pem + self.key_pem


def _credentials(leaf):
    return Credentials(b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes(), leaf)


def fingerprint(cert_pem):
    """sha256 hex of the DER of the first certificate in `cert_pem`."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii") if isinstance(cert_pem, bytes)
                                                   else cert_pem)).hexdigest()


@dataclasses.dataclass
class PKI:
    """A root CA with an intermediate for clients (as in real PKIs), and the root's PEM."""

    root: trustme.CA
    clients_ca: trustme.CA

    @property
    def ca_pem(self):
        """The root certificate: what both sides trust."""
        return self.root.cert_pem.bytes()


def make_pki(name="dyncert test", key_type=EC):
    """A root CA and a client intermediate under it."""
    root = trustme.CA(organization_name=name, key_type=key_type)
    return PKI(root, root.create_child_ca(key_type=key_type))


def server_cert(ca, *names, key_type=EC, not_before=None, not_after=None):
    """Server credentials for `names` (default localhost, 127.0.0.1, ::1) issued by `ca` (a trustme.CA)."""
    return _credentials(ca.issue_cert(*(names or SERVER_NAMES), common_name=(names or SERVER_NAMES)[0],
                                      key_type=key_type, not_before=not_before, not_after=not_after))


def client_cert(ca, name="client", key_type=EC, not_before=None, not_after=None):
    """Client credentials (CN=name, SAN email name@example.com) issued by `ca`; chain includes intermediates."""
    return _credentials(ca.issue_cert(f"{name}@example.com", common_name=name, organization_name="dyncert test",
                                      key_type=key_type, not_before=not_before, not_after=not_after))


def expired(ca, maker=client_cert, *args, **kwargs):
    """Credentials from `maker` that expired a day ago."""
    now = _now()
    return maker(ca, *args, not_before=now - datetime.timedelta(days=30),
                 not_after=now - datetime.timedelta(days=1), **kwargs)


def write_files(directory, creds, stem="server"):
    """Write `<stem>.pem` (chain) and `<stem>-key.pem` (0600) into `directory`; return both paths."""
    cert_path = os.path.join(directory, f"{stem}.pem")
    key_path = os.path.join(directory, f"{stem}-key.pem")
    with open(cert_path, "wb") as f:
        f.write(creds.cert_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(creds.key_pem)
    return cert_path, key_path


def write_pem(directory, name, pem):
    """Write public PEM (a CA bundle) to `directory/name`; return the path."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(pem)
    return path


def subject(cert_pem):
    """RFC 4514 subject of the first certificate in `cert_pem`."""
    return x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()


def pem_block(label, body="AAAA"):
    """A PEM block of `label` around `body` (written so no key-shaped line sits in the source)."""
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def pem_pair(not_before, not_after, name="carol"):
    """A (chain, key) PEM text pair of a fresh CA's leaf, valid over the given window."""
    leaf = trustme.CA().issue_cert(f"{name}@example.com", common_name=name,
                                   not_before=not_before, not_after=not_after)
    return b"".join(p.bytes() for p in leaf.cert_chain_pems).decode(), leaf.private_key_pem.bytes().decode()


def sign_csr(ca, csr_pem, days=30):
    """Issue a certificate for a CSR from a trustme CA (as a partner's CA would); returns the chain PEM."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
               .public_key(csr.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    for ext in csr.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode() + ca.cert_pem.bytes().decode()


class RunPKI:
    """The run's PKI (one per session): our root with its client intermediate, a stranger's, a server under each.

    Modules issue their own client identities from it (fresh keys per module: no cache shared by accident).
    """

    def __init__(self):
        self.ours, self.stranger = make_pki("ours"), make_pki("stranger")
        self.server = server_cert(self.ours.root)
        self.localhost_only = server_cert(self.ours.root, "localhost")
        self.stranger_server = server_cert(self.stranger.root)
