"""One error family with stable codes (the codes of API.md)."""

import ssl

# Codes for credentials and settings the caller gave us (HTTP 400 in the app).
INPUT_CODES = frozenset({
    "invalid_certificate", "invalid_key", "key_mismatch", "wrong_password",
    "certificate_expired", "certificate_not_yet_valid", "invalid_ca_certs",
    "invalid_pkcs12", "unsupported_tls_version", "invalid_target",
    "target_not_allowed", "invalid_request",
    # v1.2: a Cloud KMS key version that is malformed, unknown, disabled or out of reach of the app's role.
    "invalid_kms_key",
    # v1.2: a signer this interpreter cannot bind (its key type, schemes, or an OpenSSL dyncert cannot reach).
    "signer_unsupported",
})

# Codes for failures of the remote side (HTTP 502, or 504 for timeout).
REMOTE_CODES = frozenset({
    "unknown_ca", "hostname_mismatch", "peer_rejected_certificate",
    "protocol_version", "handshake_failed", "connection_refused",
    "dns_failure", "connection_reset", "timeout",
    # v1.1: the server's certificate outside its validity; a reply that is not HTTP after a good handshake.
    "peer_certificate_expired", "peer_certificate_not_yet_valid", "invalid_response",
    # v1.2: the signer holding the client key raised, answered garbage or did not answer in time.
    "signer_failed",
})


class DyncertError(Exception):
    """Base of every dyncert error: a stable `code` and a human `message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class InputError(DyncertError, ValueError):
    """Credentials, CA bundle, TLS version or target that cannot be used."""

    field: str | None = None  # the input it is about ("host", "port", "cert", ...), when one is

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        assert code in INPUT_CODES, code
        super().__init__(code, message)
        self.field = field


class RemoteError(DyncertError):
    """The peer or the network failed: refused, reset, rejected, timed out."""

    hint: str | None = None  # what to check, when calls knows (the admin page shows it)

    def __init__(self, code: str, message: str) -> None:
        assert code in REMOTE_CODES, code
        super().__init__(code, message)


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH: what ssl reports for the same failure during a handshake.
_HOSTNAME_MISMATCH = 62


class CertificateError(RemoteError, ssl.CertificateError):
    """Hostname mismatch from `match_hostname`; also an `ssl.CertificateError` (and ValueError).

    Seed code ported from Python 2.7 catches `ssl.CertificateError` (Python 3's
    SSLCertVerificationError, which 3.11's own match_hostname raised): it must catch ours.
    """

    def __init__(self, message: str) -> None:
        super().__init__("hostname_mismatch", message)
        self.verify_code = _HOSTNAME_MISMATCH
        self.verify_message = message

    def __str__(self) -> str:
        return self.message  # ssl.SSLError's str shows strerror, else the args tuple


class SignerError(RemoteError, ssl.SSLError):
    """signer_failed: the signer raised, returned an unusable signature, or did not answer in time.

    Also an ssl.SSLError (an OSError), so HTTP clients treat it as the TLS failure it is; the
    signer's own exception is its __cause__, its message kept.
    """

    def __init__(self, message: str, code: str = "signer_failed") -> None:
        super().__init__(code, message)  # code: handshake_failed when no scheme the signer offers fits the TLS version

    def __str__(self) -> str:
        return self.message
