"""Run-time PKI for the benchmark: one root CA, a peer certificate, client identities (trustme)."""

import dataclasses
import os

import trustme

from dyncert.identity import ClientIdentity


@dataclasses.dataclass
class BenchPKI:
    """Paths and PEM of the shared CA, peer and client certificate (client issued by the root)."""

    directory: str
    ca: trustme.CA
    ca_pem: bytes
    client_chain_pem: bytes
    client_key_pem: bytes

    def path(self, name):
        """Absolute path of a file written by `make`."""
        return os.path.join(self.directory, name)

    def identity(self):
        """The benchmark client as a ClientIdentity (validated once, like an upload)."""
        return ClientIdentity.from_pem(self.client_chain_pem, self.client_key_pem)


def _write(path, data, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def make(directory):
    """Write ca.pem, peer.pem, peer-key.pem, client.pem, client-key.pem into `directory`.

    The client certificate comes straight from the root, so openssl s_time (which sends the
    leaf only) and Python (which sends the whole chain) present exactly the same bytes.
    """
    ca = trustme.CA(organization_name="dyncert bench")
    peer = ca.issue_cert("localhost", "127.0.0.1", common_name="bench peer")
    client = ca.issue_cert("bench@example.com", common_name="bench client", organization_name="dyncert bench")
    ca_pem = ca.cert_pem.bytes()
    chain = b"".join(p.bytes() for p in client.cert_chain_pems)
    key = client.private_key_pem.bytes()
    _write(os.path.join(directory, "ca.pem"), ca_pem, 0o644)
    _write(os.path.join(directory, "peer.pem"), b"".join(p.bytes() for p in peer.cert_chain_pems), 0o644)
    _write(os.path.join(directory, "peer-key.pem"), peer.private_key_pem.bytes())
    _write(os.path.join(directory, "client.pem"), chain, 0o644)
    _write(os.path.join(directory, "client-key.pem"), key)
    return BenchPKI(directory, ca, ca_pem, chain, key)


def extra_identities(ca, count):
    """`count` more client identities under `ca` (for cold builds: each is new to the cache)."""
    out = []
    for n in range(count):
        leaf = ca.issue_cert(f"cold{n}@example.com", common_name=f"cold {n}")
        out.append(ClientIdentity.from_pem(b"".join(p.bytes() for p in leaf.cert_chain_pems),
                                           leaf.private_key_pem.bytes()))
    return out
