"""dyncert: client certificates from memory for Python 3's ssl.

The App Engine Python 2.7 runtime accepted file-like objects as `keyfile` and `certfile`, so
credentials could come straight from Datastore:

    sock = ssl.wrap_socket(sock, keyfile=StringIO(record.key_str), certfile=StringIO(record.cert),
                           cert_reqs=ssl.CERT_REQUIRED, ca_certs=CA_FILE)
    ssl.match_hostname(sock.getpeercert(), 'a.hostname.com')

Python 3's ssl loads them only from a path (cpython #60691, #118557, #129216). With dyncert the
same code runs on Python 3, the key reaching OpenSSL without plaintext on disk:

    sock = dyncert.wrap_socket(sock, keyfile=io.StringIO(record.key_str),
                               certfile=io.StringIO(record.cert),
                               cert_reqs=ssl.CERT_REQUIRED, ca_certs=CA_FILE)
    dyncert.match_hostname(sock.getpeercert(), 'a.hostname.com')

What `wrap_socket` raises: what the handshake finds stays a plain `ssl` error, as Python 2.7's
`ssl.wrap_socket` raised it (seed code's `except ssl.SSLError` keeps working); what dyncert checks
before the handshake is a `DyncertError` with a stable code (also a ValueError):

    wrong CA (the server's chain is not under ca_certs): ssl.SSLCertVerificationError
    wrong hostname, server_hostname= given: ssl.SSLCertVerificationError (verify_code 62)
    wrong hostname, found by match_hostname(): dyncert.CertificateError (ssl.CertificateError and DyncertError)
    the peer refuses our certificate: ssl.SSLError (over TLS 1.3 on the first read, not in wrap_socket)
    the connection reset, closed or timed out: OSError (ConnectionResetError, ssl.SSLEOFError, TimeoutError)
    bad key, certificate, ca_certs or ssl_version: dyncert.InputError (DyncertError; key_mismatch, invalid_key...)
    server_side=True: NotImplementedError

The modern API: `ClientIdentity.from_pem(...)` validates credentials, `cached_client_context(...)`
gives a verifying SSLContext (cached by content), and `calls` runs a handshake, an HTTPS request
or a raw echo and reports what happened (`compat_echo`: the echo through the seed-style
`wrap_socket` and `match_hostname` above). Every failure of the modern API is a `DyncertError` with a
stable code.
"""

__version__ = "0.1.0"

from .calls import Timeouts, compat_echo, echo, handshake, https_request
from .compat import match_hostname, wrap_socket
from .context import ContextCache, cached_client_context, client_context
from .errors import CertificateError, DyncertError, InputError, RemoteError
from .identity import ClientIdentity
from .signers import LocalSigner, Signer, SignerIdentity
from .targets import Target, validate_target

__all__ = [
    "CertificateError", "ClientIdentity", "ContextCache", "DyncertError", "InputError", "RemoteError",
    "Target", "Timeouts", "cached_client_context", "client_context", "compat_echo", "echo", "handshake",
    "https_request", "match_hostname", "validate_target", "wrap_socket",
    "LocalSigner", "Signer", "SignerIdentity",
]
