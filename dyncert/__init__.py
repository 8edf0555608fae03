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

The modern API: `ClientIdentity.from_pem(...)` validates credentials, `cached_client_context(...)`
gives a verifying SSLContext (cached by content), and `calls` runs a handshake, an HTTPS request
or a raw echo and reports what happened. Every failure is a `DyncertError` with a stable code.
"""

__version__ = "0.1.0"

from .calls import Timeouts, echo, handshake, https_request
from .compat import match_hostname, wrap_socket
from .context import ContextCache, cached_client_context, client_context
from .errors import CertificateError, DyncertError, InputError, RemoteError
from .identity import ClientIdentity
from .signers import LocalSigner, Signer, SignerIdentity
from .targets import Target, validate_target

__all__ = [
    "CertificateError", "ClientIdentity", "ContextCache", "DyncertError", "InputError", "RemoteError",
    "Target", "Timeouts", "cached_client_context", "client_context", "echo", "handshake",
    "https_request", "match_hostname", "validate_target", "wrap_socket",
    "LocalSigner", "Signer", "SignerIdentity",
]
