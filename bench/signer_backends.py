"""Signer backends side by side (issue 18.4): signatures per second and full handshakes per second, P-256.

LocalSigner (the key in memory) is the baseline measured in the same run; CloudKmsSigner goes through
the real google-cloud-kms client to the local Cloud KMS STAND-IN (tests/harness/kms_standin.py: gRPC on
loopback, software keys: what the client stack costs, not Cloud KMS's latency); Pkcs11Signer signs
on a SoftHSM2 token. Handshakes: TLS 1.3 against `openssl s_server -Verify 1 -verify_return_error`.

    python -m bench.signer_backends [--rounds 5] [--duration 0.5]
"""

import argparse
import hashlib
import socket
import sys

from cryptography.hazmat.primitives.asymmetric import ec

from dyncert import context, runtime
from dyncert.signers import LocalSigner, SignerIdentity
from dyncert.signers.cloudkms import CloudKmsSigner
from tests.harness import interop_pki, kms_standin, peers, pki, softhsm

from . import timing


def _full_handshake(ctx, port):
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version()


def signers(standin):
    """name -> signer, each holding a P-256 key of its own."""
    out = {"local": LocalSigner(ec.generate_private_key(ec.SECP256R1()))}
    out["kms_standin"] = CloudKmsSigner(standin.add_key(kms_standin.Algorithm.EC_SIGN_P256_SHA256),
                                        client=standin.client())
    if softhsm.available() is None:
        from dyncert.signers.pkcs11 import Pkcs11Signer
        module, token_label, pin = softhsm.token()
        out["softhsm2"] = Pkcs11Signer(module, token_label=token_label, key_label=softhsm.generate("p256"), pin=pin)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=0.5)
    args = parser.parse_args(argv)
    digest = hashlib.sha256(b"bench").digest()
    with kms_standin.KmsStandIn() as standin:
        made = signers(standin)
        ops = {name: timing.timed(lambda s=s: s.sign(digest, "ecdsa_sha256")) for name, s in made.items()}
        sign = {n: timing.summarize(v) for n, v in timing.alternate(ops, args.rounds, args.duration).items()}
        shake = None
        if runtime.signer_binding()["available"]:
            servers, clients = pki.make_pki("bench signers"), interop_pki.make_ca("bench signer clients")
            contexts = {}
            for name, s in made.items():
                leaf = interop_pki.issue(clients, s.public_key(), f"bench-{name}")
                ident = SignerIdentity(interop_pki.chain_pem(leaf, clients), s)
                contexts[name] = context.client_context(ident, servers.ca_pem)
            with peers.OpenSSLServer(pki.server_cert(servers.root), clients.cert_pem, tls="1.3") as server:
                ops = {n: timing.timed(lambda c=c: _full_handshake(c, server.port)) for n, c in contexts.items()}
                shake = {n: timing.summarize(v) for n, v in timing.alternate(ops, args.rounds, args.duration).items()}
    print(f"signer backends, P-256 — Python {sys.version.split()[0]}, {args.rounds} rounds x {args.duration} s, "
          "alternated, medians (ratio: vs LocalSigner in the same run)")
    for title, table in (("signatures per second (sign() alone)", sign),
                         ("full TLS 1.3 handshakes per second (openssl s_server -Verify 1)", shake)):
        if table is None:
            print(f"\n{title}: not measured ({runtime.signer_binding()['detail']})")
            continue
        print(f"\n{title}")
        for name, row in table.items():
            print(f"  {name:12} {row['rate']:9.0f}/s  ({row['rate_min']:.0f}..{row['rate_max']:.0f})  "
                  f"{row['rate'] / table['local']['rate']:.3f}x")


if __name__ == "__main__":
    main()
