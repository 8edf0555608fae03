"""Facts about this interpreter's TLS stack, for status pages."""

import platform
import ssl
from typing import TypedDict

# Versions dyncert will negotiate: RFC 8996 deprecates TLS 1.0 and 1.1.
SUPPORTED = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)


def tls_versions() -> list[str]:
    """TLS versions this OpenSSL build offers among those dyncert allows."""
    flags = {ssl.TLSVersion.TLSv1_2: ssl.HAS_TLSv1_2, ssl.TLSVersion.TLSv1_3: ssl.HAS_TLSv1_3}
    return [v.name.replace("_", ".") for v in SUPPORTED if flags[v]]  # "TLSv1.2", as ssl reports it


class SignerBinding(TypedDict):
    """Whether a signer (Cloud KMS, PKCS#11) can present a client certificate here, and why not."""

    available: bool
    detail: str


class Facts(TypedDict):
    """What `facts` reports."""

    python: str
    openssl: str
    tls_versions: list[str]
    signer_binding: SignerBinding


def signer_binding() -> SignerBinding:
    """Can this interpreter bind a signer to its ssl contexts (dynamic _ssl, the needed OpenSSL functions)?"""
    from .signers import _binding  # ctypes, loaded only when asked
    available, detail = _binding.availability()
    return {"available": available, "detail": detail}


def facts() -> Facts:
    """Python version, OpenSSL version and TLS versions, as plain values."""
    return {
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "tls_versions": tls_versions(),
        "signer_binding": signer_binding(),
    }
