"""One contestant of the `peers` group, in a process of its own: `python bench/peer_worker.py CLIENT MODE DURATION
MAX_CALLS PORT DIR` prints {"count", "wall", "cpu", "version"} as JSON.

CLIENT: dyncert (its requests adapter), requests_pkcs12, google_auth (AuthorizedSession.configure_mtls_channel
with a client-cert callback) or niquests (cert= in-memory PEM). MODE: warm (one session, one identity,
keep-alive) or cold (a new session and an identity never seen before on every request: made before the
clock starts, so only what the client does with it is timed). Runs under .venv (the first three) or
.venv-peers (niquests: urllib3-future replaces urllib3 where it is installed).
"""

import datetime
import json
import os
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def identities(directory, count):
    """`count` new client identities under the bench CA: [(chain PEM, key PEM, PKCS#12 bytes)]."""
    with open(os.path.join(directory, "ca.pem"), "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(directory, "ca-key.pem"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    out = []
    for n in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"peer bench {os.getpid()} {n}")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        p12 = pkcs12.serialize_key_and_certificates(b"bench", key, cert, None, serialization.NoEncryption())  # no KDF to time
        out.append((cert_pem, key_pem, p12))
    return out


def dyncert_client(ca_file):
    import requests

    from dyncert.identity import ClientIdentity
    from dyncert.requests import ClientCertAdapter

    def session(cert_pem, key_pem, p12):
        s = requests.Session()
        s.mount("https://", ClientCertAdapter(ClientIdentity.from_pem(cert_pem, key_pem), ca_certs=ca_file))
        return s, {}
    import dyncert
    return session, getattr(dyncert, "__version__", "local")


def requests_pkcs12_client(ca_file):
    import importlib.metadata

    import requests
    from requests_pkcs12 import Pkcs12Adapter

    def session(cert_pem, key_pem, p12):
        s = requests.Session()
        s.mount("https://", Pkcs12Adapter(pkcs12_data=p12, pkcs12_password=None))
        return s, {"verify": ca_file}
    return session, importlib.metadata.version("requests-pkcs12")


def google_auth_client(ca_file):
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.auth.transport.requests import AuthorizedSession
    os.environ["GOOGLE_API_USE_CLIENT_CERTIFICATE"] = "true"

    def session(cert_pem, key_pem, p12):
        s = AuthorizedSession(AnonymousCredentials())
        s.configure_mtls_channel(lambda: (cert_pem, key_pem))
        if not s.is_mtls:
            raise RuntimeError("google-auth did not configure mTLS")
        # Its adapter trusts certifi's roots only; requests' verify= adds the bench CA to that context.
        return s, {"verify": ca_file}
    return session, google.auth.__version__


def niquests_client(ca_file):
    import niquests
    with open(ca_file) as f:
        ca_pem = f.read()

    def session(cert_pem, key_pem, p12):
        return niquests.Session(), {"cert": (cert_pem.decode(), key_pem.decode()), "verify": ca_pem}
    return session, niquests.__version__


CLIENTS = {"dyncert": dyncert_client, "requests_pkcs12": requests_pkcs12_client,
           "google_auth": google_auth_client, "niquests": niquests_client}


def run(client, mode, duration, max_calls, port, directory):
    url = f"https://localhost:{port}/"
    make_session, version = CLIENTS[client](os.path.join(directory, "ca.pem"))
    fresh = identities(directory, max_calls + 1 if mode == "cold" else 1)

    def get(session, kwargs):
        response = session.get(url, timeout=30, **kwargs)
        if response.status_code != 200 or b"peer bench" not in response.content:
            raise RuntimeError(f"{client}: {response.status_code} {response.content[:200]!r}")

    warm_session, warm_kwargs = make_session(*fresh[0])
    get(warm_session, warm_kwargs)  # untimed: imports, first connection
    count = 0
    cpu0, started = time.process_time(), time.perf_counter()
    deadline = started + duration
    while count < max_calls and time.perf_counter() < deadline:
        if mode == "warm":
            get(warm_session, warm_kwargs)
        else:
            session, kwargs = make_session(*fresh[count + 1])
            try:
                get(session, kwargs)
            finally:
                session.close()
        count += 1
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    warm_session.close()
    return {"count": count, "wall": wall, "cpu": cpu, "version": version}


if __name__ == "__main__":
    name, how, seconds, most, peer_port, pki_dir = sys.argv[1:7]
    print(json.dumps(run(name, how, float(seconds), int(most), int(peer_port), pki_dir)))
