"""What one mTLS connection shows: TLS version, cipher, the peer certificate's names and dates (TLSInfo)."""

import dataclasses
import functools
import ssl
from typing import TypedDict, cast

from cryptography import x509

from .. import targets
from ..identity import display_name, rfc3339, san_list


class PeerFacts(TypedDict):
    """What `peer_facts` reports about the peer's certificate."""

    subject: str | None
    issuer: str | None
    san: list[str]
    not_after: str | None


@dataclasses.dataclass
class TLSInfo:
    """Facts of one mTLS connection, as API.md's handshake fields."""

    tls_version: str
    cipher: str
    peer: PeerFacts
    server_hostname: str
    hostname_verified: bool
    client_fingerprint_sha256: str
    session_reused: bool = False
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """The JSON-ready fields of API.md (a copy: the peer dict and its lists are new)."""
        out = {field.name: getattr(self, field.name) for field in _TLS_FIELDS}
        out["peer"] = {k: list(v) if isinstance(v, list) else v for k, v in self.peer.items()}
        return out


_TLS_FIELDS = dataclasses.fields(TLSInfo)


# --- peer certificate facts ---------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _parsed_peer_facts(der: bytes) -> tuple[str, str, tuple[str, ...], str]:
    """(subject, issuer, san tuple, not_after) of a DER certificate; a peer shows the same one call after call."""
    cert = x509.load_der_x509_certificate(der)
    return (display_name(cert.subject), display_name(cert.issuer), tuple(san_list(cert)),  # openssl order
            rfc3339(cert.not_valid_after_utc))


def peer_facts(der: bytes | None) -> PeerFacts:
    """subject, issuer, san, not_after of the peer certificate (DER); a new dict every call."""
    if der is None:
        return {"subject": None, "issuer": None, "san": [], "not_after": None}
    subject, issuer, san, not_after = _parsed_peer_facts(bytes(der))
    return {"subject": subject, "issuer": issuer, "san": list(san), "not_after": not_after}


def tls_info(sock: ssl.SSLSocket, context: ssl.SSLContext, target: targets.Target,
             client_fingerprint: str) -> TLSInfo:
    """TLSInfo of a connected SSLSocket (elapsed_ms filled in by the caller)."""
    # Casts: typeshed allows None before a handshake; this socket has shaken hands.
    return TLSInfo(tls_version=cast(str, sock.version()), cipher=cast(tuple[str, str, int], sock.cipher())[0],
                   peer=peer_facts(sock.getpeercert(binary_form=True)), server_hostname=target.sni,
                   hostname_verified=bool(context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED),
                   client_fingerprint_sha256=client_fingerprint, session_reused=cast(bool, sock.session_reused))
