"""A demo PKI made at run time (never committed): one CA, a client intermediate, a peer and a client."""

import datetime
import os

import trustme
from cryptography import x509

FILES = ("ca.pem", "peer.pem", "client-chain.pem", "client-key.pem")
LIFETIME = datetime.timedelta(days=365)
ORGANIZATION = "dyncert demo"


def _write(path, data, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def still_valid(directory, margin=datetime.timedelta(days=7)):
    """True when every demo file exists and the client certificate outlives `margin`."""
    if not all(os.path.exists(os.path.join(directory, name)) for name in FILES):
        return False
    with open(os.path.join(directory, "client-chain.pem"), "rb") as f:
        leaf = x509.load_pem_x509_certificate(f.read())
    return leaf.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) > margin


def generate(directory):
    """Write ca.pem, peer.pem (chain + key), client-chain.pem and client-key.pem into `directory`."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    # Every certificate is named after the demo (trustme's default organization is "trustme vX.Y").
    root = trustme.CA(organization_name=ORGANIZATION, organization_unit_name="root CA")
    # The client chain has an intermediate, as in real PKIs.
    clients = trustme.CA(parent_cert=root, path_length=0, organization_name=ORGANIZATION,
                         organization_unit_name="client CA")
    peer = root.issue_cert("localhost", "127.0.0.1", "::1", common_name="demo peer",
                           organization_name=ORGANIZATION, organization_unit_name="demo peer",
                           not_before=now - datetime.timedelta(minutes=5), not_after=now + LIFETIME)
    client = clients.issue_cert("asalieri@example.com", common_name="asalieri",
                                organization_name=ORGANIZATION, organization_unit_name="demo client",
                                not_before=now - datetime.timedelta(minutes=5), not_after=now + LIFETIME)
    _write(os.path.join(directory, "ca.pem"), root.cert_pem.bytes(), 0o644)
    _write(os.path.join(directory, "peer.pem"),
           b"".join(p.bytes() for p in peer.cert_chain_pems) + peer.private_key_pem.bytes())
    _write(os.path.join(directory, "client-chain.pem"),
           b"".join(p.bytes() for p in client.cert_chain_pems), 0o644)  # leaf + intermediate
    _write(os.path.join(directory, "client-key.pem"), client.private_key_pem.bytes())
    return directory


def ensure(directory):
    """Reuse the demo PKI in `directory` while it is valid, else make a new one."""
    if not still_valid(directory):
        generate(directory)
    return directory
