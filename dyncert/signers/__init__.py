"""Client identities whose private key never enters the process: a signer (Cloud KMS, PKCS#11, ...) signs.

The contract (`Signer`) is duck-typed: `public_key()`, `sign(data, scheme)`, optional `schemes` and
`cache_key()`. `SignerIdentity(chain_pem, signer)` stands wherever a ClientIdentity stands.
"""

from ..errors import SignerError
from .base import ECDSA_SCHEMES, RSA_PKCS1_SCHEMES, RSA_PSS_SCHEMES, SCHEMES, Scheme, Signer, default_schemes
from .identity import DEFAULT_SIGN_TIMEOUT, SignerIdentity
from .local import LocalSigner

__all__ = ["DEFAULT_SIGN_TIMEOUT", "ECDSA_SCHEMES", "RSA_PKCS1_SCHEMES", "RSA_PSS_SCHEMES", "LocalSigner", "SCHEMES", "Scheme",
           "Signer", "SignerError", "SignerIdentity", "default_schemes"]
