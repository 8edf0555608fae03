"""Shared PKI and loopback peers for the adapter and recipe tests: nginx reporting the certificate it saw."""

import hashlib
import ssl

from . import nginx
from dyncert.identity import ClientIdentity
from . import peers, pki


class Identity:
    """A ClientIdentity with the facts tests compare against what a peer saw."""

    def __init__(self, creds):
        self.creds = creds
        self.identity = ClientIdentity.from_pem(creds.cert_pem, creds.key_pem)
        self.leaf_pem = creds.leaf_pem.decode("ascii")
        self.sha1 = hashlib.sha1(ssl.PEM_cert_to_DER_cert(self.leaf_pem)).hexdigest()  # nginx reports SHA-1
        self.sha256 = creds.fingerprint_sha256


class World:
    """The run's PKI (root + client intermediate) and the stranger's; alice and bob under ours, mallory under the stranger."""

    def __init__(self, run_pki):
        self.ours, self.stranger = run_pki.ours, run_pki.stranger
        self.server, self.localhost_only, self.stranger_server = run_pki.server, run_pki.localhost_only, \
            run_pki.stranger_server
        self.alice = Identity(pki.client_cert(self.ours.clients_ca, "alice"))
        self.bob = Identity(pki.client_cert(self.ours.clients_ca, "bob"))
        self.mallory = Identity(pki.client_cert(self.stranger.clients_ca, "mallory"))
        self.ca_pem = self.ours.ca_pem.decode("ascii")

    def nginx(self, server=None):
        """nginx requiring a client certificate under our root, presenting `server` (default: ours)."""
        return nginx.NginxPeer(server or self.server, self.ours.ca_pem)

    def rejecting_peer(self):
        """A Python ssl peer whose handshake refuses every client certificate of ours (it trusts the stranger)."""
        return peers.PythonTLSPeer(self.server, client_ca_pem=self.stranger.ca_pem)

    def whoami_peer(self):
        """A Python ssl peer naming the client certificate of each connection, counting connections."""
        return peers.PythonTLSPeer(self.server, client_ca_pem=self.ours.ca_pem)


def url(peer, host="127.0.0.1", path="/"):
    """https URL of a loopback peer."""
    return f"https://{host}:{peer.port}{path}"
