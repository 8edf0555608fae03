"""Client identities in every common shape, made at run time: key types, encodings, PKCS#12, 0-2 intermediates.

cryptography makes what it can; the `openssl` CLI makes what it cannot (RSA-PSS keys and
certificates, legacy DES3-encrypted PEM, encrypted PKCS#8 with a chosen iteration count).
Client keys travel to openssl through pipes; only the test CAs' keys touch the temporary
directory (they sign the certificates, like any server-side test file).
"""

import dataclasses
import datetime
import hashlib
import os
import subprocess
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PASSWORD = "interop pass phrase"
UTC = datetime.timezone.utc
DAY = datetime.timedelta(days=1)
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
CLIENT_AUTH = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])


def openssl(*args, data=None):
    """Run the openssl CLI, `data` on stdin; its stdout (raises with stderr on failure)."""
    done = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=60)
    if done.returncode:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return done.stdout


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dyncert interop")])


@dataclasses.dataclass
class Issuer:
    """A CA certificate and key; `chain` is this CA and its parents up to (not including) the root."""

    cert: x509.Certificate
    key: object = dataclasses.field(repr=False)
    chain: list = dataclasses.field(default_factory=list)
    paths: tuple = None  # (cert path, key path) once written for the openssl CLI

    @property
    def cert_pem(self):
        return self.cert.public_bytes(PEM)


def make_ca(cn, parent=None, now=None):
    """An EC P-256 CA, self-signed or under `parent` (an Issuer)."""
    now = now or datetime.datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_cert, issuer_key = (parent.cert, parent.key) if parent else (None, key)
    cert = (x509.CertificateBuilder().subject_name(_name(cn))
            .issuer_name(issuer_cert.subject if issuer_cert else _name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY).not_valid_after(now + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256()))
    chain = ([cert] + parent.chain) if parent else []
    return Issuer(cert, key, chain)


def issue(issuer, public_key, cn, sans=(), not_before=None, not_after=None, extensions=(CLIENT_AUTH,)):
    """A leaf certificate for `public_key` signed by `issuer` (cryptography), with the given extensions."""
    now = datetime.datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer.cert.subject)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or now - DAY).not_valid_after(not_after or now + 30 * DAY)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


def write_issuer(issuer, directory):
    """Write the CA's certificate and key for the openssl CLI (once per directory); return the paths."""
    if issuer.paths is None or os.path.dirname(issuer.paths[0]) != directory:
        stem = os.path.join(directory, hashlib.sha256(issuer.cert_pem).hexdigest()[:12])
        with open(stem + ".pem", "wb") as f:
            f.write(issuer.cert_pem)
        fd = os.open(stem + ".key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(issuer.key.private_bytes(PEM, PKCS8, serialization.NoEncryption()))
        issuer.paths = (stem + ".pem", stem + ".key")
    return issuer.paths


def rsa_pss_key(bits=2048, restricted=False):
    """A fresh RSA-PSS private key (PKCS#8 PEM from `openssl genpkey`): cryptography cannot make one.

    restricted: the key carries RSASSA-PSS parameters (SHA-256, MGF1-SHA-256, salt 32) it may only sign with.
    """
    opts = ["-pkeyopt", f"rsa_keygen_bits:{bits}"]
    if restricted:
        opts += ["-pkeyopt", "rsa_pss_keygen_md:sha256", "-pkeyopt", "rsa_pss_keygen_mgf1_md:sha256",
                 "-pkeyopt", "rsa_pss_keygen_saltlen:32"]
    return openssl("genpkey", "-algorithm", "RSA-PSS", *opts)


def openssl_issue(issuer, key_pem, cn, directory, days=30):
    """A leaf certificate for the key in `key_pem` signed by `issuer`, through the openssl CLI (keeps RSA-PSS)."""
    ca_cert, ca_key = write_issuer(issuer, directory)
    csr = openssl("req", "-new", "-key", "/dev/stdin", "-subj", f"/CN={cn}/O=dyncert interop", data=key_pem)
    ext = os.path.join(directory, "client.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n")
    pem = openssl("x509", "-req", "-in", "/dev/stdin", "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
                  "-days", str(days), "-sha256", "-extfile", ext, data=csr)
    return x509.load_pem_x509_certificate(pem)


@dataclasses.dataclass
class Identity:
    """What a partner uploads: a chain PEM and a key PEM (maybe encrypted), or a PKCS#12; plus the leaf."""

    name: str
    leaf: x509.Certificate
    chain_pem: bytes
    key_pem: bytes = dataclasses.field(default=None, repr=False)
    password: str = None
    pkcs12: bytes = dataclasses.field(default=None, repr=False)
    key_type: str = None

    @property
    def sha256(self):
        return hashlib.sha256(self.leaf.public_bytes(DER)).hexdigest()

    @property
    def sha1(self):
        return hashlib.sha1(self.leaf.public_bytes(DER)).hexdigest()

    def load(self):
        """The dyncert ClientIdentity of this upload."""
        from dyncert.identity import ClientIdentity
        if self.pkcs12 is not None:
            return ClientIdentity.from_pkcs12(self.pkcs12, self.password)
        return ClientIdentity.from_pem(self.chain_pem, self.key_pem, self.password)


def openssl_p12(name, key_pem, leaf, issuer, directory, legacy=False):
    """`openssl pkcs12 -export` of key, leaf and intermediates; legacy: `-legacy` (RC2-40 certificates, 3DES key)."""
    cert_path = os.path.join(directory, f"{name}.pem")
    with open(cert_path, "wb") as f:
        f.write(leaf.public_bytes(PEM) + b"".join(c.public_bytes(PEM) for c in issuer.chain))
    args = ["pkcs12", "-export", "-inkey", "/dev/stdin", "-in", cert_path, "-passout", f"pass:{PASSWORD}"]
    return openssl(*args, *(["-legacy"] if legacy else []), data=key_pem)


def chain_pem(leaf, issuer):
    """Leaf then the intermediates (the root is the server's trust anchor, not sent)."""
    return leaf.public_bytes(PEM) + b"".join(c.public_bytes(PEM) for c in issuer.chain)


def encode_key(key, encoding):
    """The private key PEM in `encoding`: pkcs1/sec1 (traditional), pkcs8, pkcs8-enc, des3 (legacy PEM)."""
    if encoding in ("pkcs1", "sec1"):
        return key.private_bytes(PEM, TRADITIONAL, serialization.NoEncryption())
    if encoding == "pkcs8":
        return key.private_bytes(PEM, PKCS8, serialization.NoEncryption())
    if encoding == "pkcs8-enc":
        return key.private_bytes(PEM, PKCS8, serialization.BestAvailableEncryption(PASSWORD.encode()))
    if encoding == "des3":
        plain = key.private_bytes(PEM, TRADITIONAL, serialization.NoEncryption())
        tool = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"
        return openssl(tool, "-des3", "-traditional", "-passout", f"pass:{PASSWORD}", data=plain)
    raise ValueError(encoding)


def p12(key, leaf, issuer, legacy=False):
    """A PKCS#12 of key, leaf and intermediates: AES-256/PBKDF2 (modern) or 3DES/SHA-1 (legacy)."""
    if legacy:
        enc = (serialization.PrivateFormat.PKCS12.encryption_builder()
               .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(hashes.SHA1())
               .build(PASSWORD.encode()))
    else:
        enc = serialization.BestAvailableEncryption(PASSWORD.encode())
    return pkcs12.serialize_key_and_certificates(b"client", key, leaf, issuer.chain or None, enc)


def new_key(kind):
    """rsa2048 | p256 | p384 | p521 | ed25519."""
    return {"rsa2048": lambda: rsa.generate_private_key(65537, 2048),
            "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
            "ed25519": ed25519.Ed25519PrivateKey.generate}[kind]()


KEY_TYPES = {"rsa2048": "RSA 2048", "p256": "EC P-256", "p384": "EC P-384", "p521": "EC P-521",
             "ed25519": "Ed25519", "rsa-pss": "RSA-PSS 2048", "rsa-pss-restricted": "RSA-PSS 2048"}


def identity(name, issuer, kind, encoding, directory=None, **issue_kw):
    """One client identity: key `kind` in `encoding` (or 'p12'/'p12-legacy'), issued by `issuer`."""
    if kind in ("rsa-pss", "rsa-pss-restricted"):
        key_pem = rsa_pss_key(restricted=kind == "rsa-pss-restricted")
        leaf = openssl_issue(issuer, key_pem, name, directory)
        chain = chain_pem(leaf, issuer)
        if encoding == "pkcs8":
            return Identity(name, leaf, chain, key_pem, key_type=KEY_TYPES[kind])
        if encoding == "pkcs8-enc":
            enc = openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", f"pass:{PASSWORD}", data=key_pem)
            return Identity(name, leaf, chain, enc, PASSWORD, key_type=KEY_TYPES[kind])
        if encoding in ("p12", "p12-openssl-legacy"):
            data = openssl_p12(name, key_pem, leaf, issuer, directory, legacy=encoding == "p12-openssl-legacy")
            return Identity(name, leaf, chain, password=PASSWORD, pkcs12=data, key_type=KEY_TYPES[kind])
        raise ValueError(encoding)
    key = new_key(kind)
    leaf = issue(issuer, key.public_key(), name, **issue_kw)
    chain = chain_pem(leaf, issuer)
    if encoding == "p12-openssl-legacy":
        data = openssl_p12(name, encode_key(key, "pkcs8"), leaf, issuer, directory, legacy=True)
        return Identity(name, leaf, chain, password=PASSWORD, pkcs12=data, key_type=KEY_TYPES[kind])
    if encoding in ("p12", "p12-legacy"):
        return Identity(name, leaf, chain, password=PASSWORD, pkcs12=p12(key, leaf, issuer, encoding == "p12-legacy"),
                        key_type=KEY_TYPES[kind])
    password = PASSWORD if encoding in ("pkcs8-enc", "des3") else None
    return Identity(name, leaf, chain, encode_key(key, encoding), password, key_type=KEY_TYPES[kind])


def workdir():
    """A private temporary directory for CA files (the caller removes it)."""
    return tempfile.mkdtemp(prefix="interop-pki-")
