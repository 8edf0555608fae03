"""A key holder in another process (as KMS is another machine): it makes a P-256 key and signs digests on request.

Protocol on stdin/stdout, one line each:
  start            -> `spki <hex DER SubjectPublicKeyInfo>` and `needles <json>` (what a memory scan looks for,
                      without the key: 4-byte prefixes and SHA-256 of the scalar's byte forms and of the DER)
  sign <scheme> <hex digest> -> `sig <hex DER signature>`
  reveal           -> `pem <hex PKCS#8 PEM>` (only for the twin that loads the key the ordinary way)
"""

import hashlib
import json
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

HASHES = {"ecdsa_sha256": hashes.SHA256, "ecdsa_sha384": hashes.SHA384, "ecdsa_sha512": hashes.SHA512}


def needles(key):
    """Byte forms of the secret a scan may meet: big-endian scalar (DER, PEM decoders), little-endian (BIGNUM words), DER."""
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    forms = {"scalar_be": scalar, "scalar_le": scalar[::-1], "pkcs8_der": der}
    return {name: {"prefix": data[:4].hex(), "length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                   "offset": 0} for name, data in forms.items()}


def main():
    key = ec.generate_private_key(ec.SECP256R1())
    for line in sys.stdin:
        words = line.split()
        if words[0] == "start":
            spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
            print("spki", spki.hex())
            print("needles", json.dumps(needles(key)))
        elif words[0] == "sign":
            signature = key.sign(bytes.fromhex(words[2]), ec.ECDSA(utils.Prehashed(HASHES[words[1]]())))
            print("sig", signature.hex())
        elif words[0] == "reveal":
            print("pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()).hex())
        sys.stdout.flush()


if __name__ == "__main__":
    main()
