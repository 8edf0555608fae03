"""Proof (issue 18): with a signer, the private key never enters the calling process.

The key lives in another process (tests/harness/signer_process.py) that signs digests on request, as Cloud
KMS would. After TLS 1.2 and 1.3 handshakes and HTTPS requests through the requests adapter, this
process's readable memory (/proc/self/maps ranges read through /proc/self/mem) holds no copy of the
private scalar (big- or little-endian, as OpenSSL's BIGNUM words hold it) nor its PKCS#8 DER. The
twin loads the same key the ordinary way (ClientIdentity) and the same scan finds it: the scan can see.

The scan never holds the secret itself: the key holder sends a 4-byte prefix and the SHA-256 of each form.
"""

import datetime
import hashlib
import json
import os
import subprocess
import sys
import threading

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dyncert import calls, context, runtime, targets
from dyncert.identity import ClientIdentity
from dyncert.requests import ClientCertAdapter
from dyncert.signers import SignerIdentity
from tests.harness import peers, pki

BINDING = runtime.signer_binding()
pytestmark = [pytest.mark.interp, pytest.mark.skipif(not BINDING["available"], reason=f"signer_unsupported here: {BINDING['detail']}")]
FAST = calls.Timeouts(connect=5, handshake=5, read=5, total=15)


class KeyHolder:
    """The other process, and a Signer that forwards each signature to it."""

    schemes = ("ecdsa_sha256", "ecdsa_sha384", "ecdsa_sha512")

    def __init__(self):
        script = os.path.join(os.path.dirname(__file__), "harness", "signer_process.py")
        self.proc = subprocess.Popen([sys.executable, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.lock = threading.Lock()
        spki = bytes.fromhex(self._ask("start", "spki"))
        self.needles = json.loads(self.proc.stdout.readline().split(" ", 1)[1])
        self._public = serialization.load_der_public_key(spki)
        self.signatures = 0

    def _ask(self, line, answer):
        with self.lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            word, value = self.proc.stdout.readline().split()
        assert word == answer
        return value

    def public_key(self):
        return self._public

    def sign(self, data, scheme):
        self.signatures += 1
        return bytes.fromhex(self._ask(f"sign {scheme} {data.hex()}", "sig"))

    def reveal_pem(self):
        return bytes.fromhex(self._ask("reveal", "pem"))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def issue(ca, public_key, name):
    """A client certificate for `public_key` from the trustme CA `ca`, with the CA in the chain."""
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    issuer_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer.subject).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(issuer_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM) + ca.cert_pem.bytes()


def scan_memory(needles):
    """Names of the needles found in this process's readable memory (prefix hit, then SHA-256 of the window)."""
    found = set()
    wanted = [(name, bytes.fromhex(n["prefix"]), n["length"], n["sha256"]) for name, n in needles.items()]
    with open("/proc/self/maps") as maps:
        regions = [line.split() for line in maps]
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for fields in regions:
            if not fields[1].startswith("r") or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            for chunk_start in range(start, end, 1 << 24):  # 16 MiB at a time, overlapping by a window
                size = min(end - chunk_start, (1 << 24) + 4096)
                try:
                    data = os.pread(fd, size, chunk_start)
                except OSError:
                    break
                for name, prefix, length, digest in wanted:
                    at = data.find(prefix)
                    while at != -1:
                        if hashlib.sha256(data[at:at + length]).hexdigest() == digest:
                            found.add(name)
                            break
                        at = data.find(prefix, at + 1)
                del data
    finally:
        os.close(fd)
    return found


def exercise(identity, world, server, peer):
    """TLS 1.2 and 1.3 handshakes, then HTTPS requests through the requests adapter."""
    for version in ("TLSv1_2", "TLSv1_3"):
        ctx = context.client_context(identity, world["ca_pem"], version)
        calls.handshake(ctx, targets.Target("127.0.0.1", server.port), identity.fingerprint_sha256, timeouts=FAST)
    session = requests.Session()
    session.mount("https://", ClientCertAdapter(identity, ca_certs=world["ca_pem"]))
    for _ in range(3):
        seen = session.get(f"https://localhost:{peer.port}/", timeout=10).json()
        assert seen["fingerprint_sha256"] == identity.fingerprint_sha256
    return session


@pytest.fixture(scope="module")
def world():
    ours = pki.make_pki("memory proof")
    holder = KeyHolder()
    chain = issue(ours.clients_ca, holder.public_key(), "held-elsewhere")
    w = {"ca_pem": ours.ca_pem, "holder": holder, "chain": chain}
    with peers.OpenSSLServer(pki.server_cert(ours.root), ours.ca_pem) as server, \
            peers.PythonTLSPeer(pki.server_cert(ours.root), client_ca_pem=ours.ca_pem) as peer:
        w["server"], w["peer"] = server, peer
        yield w
    holder.close()


def test_the_key_never_enters_this_process(world):
    holder = world["holder"]
    identity = SignerIdentity(world["chain"], holder)
    session = exercise(identity, world, world["server"], world["peer"])
    assert holder.signatures >= 3  # two handshakes and the requests' connection were signed over there
    found = scan_memory(holder.needles)
    assert found == set(), f"private key material found in this process: {sorted(found)}"
    session.close()


def test_twin_the_scan_finds_the_key_loaded_the_ordinary_way(world):
    """Runs after the proof (file order): the same key, now loaded into this process, is found by the same scan."""
    holder = world["holder"]
    identity = ClientIdentity.from_pem(world["chain"], holder.reveal_pem())
    session = exercise(identity, world, world["server"], world["peer"])
    found = scan_memory(holder.needles)
    print(f"memory scan found in the twin: {sorted(found)}")
    assert found & {"scalar_be", "scalar_le", "pkcs8_der"}, "the scan did not see a key that is in memory"
    session.close()
