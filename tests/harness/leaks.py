"""Looking for key material where it must never be: responses, logs, temporary files."""

import base64
import os
import tempfile

from cryptography.hazmat.primitives import serialization


def secret_lines(key_pem):
    """Base64 body lines of a private key that are not also part of its public key (EC keys end with it)."""
    key = serialization.load_pem_private_key(key_pem, None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    der_b64 = base64.b64encode(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption())).decode()
    lines = [line for line in key_pem.decode().splitlines() if line and "-----" not in line and line not in public]
    return [line for line in lines if len(line) >= 16] + [der_b64[40:80]]


class Scanner:
    """Collects every text the app produced and checks it for the needles."""

    def __init__(self, needles):
        self.needles = [n for n in needles if n]
        self.seen = 0

    def check(self, text, where):
        self.seen += 1
        for needle in self.needles:
            assert needle not in text, f"secret found in {where}"

    def response(self, response, where):
        self.check(response.body.decode("utf-8", "replace"), f"body of {where}")
        self.check("\n".join(f"{k}: {v}" for k, v in response.headerlist), f"headers of {where}")
        return response


def scan_temp(scanner, since, seen):
    """Every file under the temp dir and /dev/shm changed since `since` (each file read once)."""
    for top in {tempfile.gettempdir(), "/tmp", "/dev/shm"}:
        for root, _, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                    if st.st_mtime < since or st.st_size > 8 * 1024 * 1024 or (path, st.st_mtime) in seen:
                        continue
                    seen.add((path, st.st_mtime))
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                scanner.check(data.decode("latin-1"), path)
