"""A STAND-IN for Cloud KMS: a loopback gRPC server of the KeyManagementService methods dyncert uses.

Used by the tests and by `make run` (`python -m devserver.kms_standin --port P`), never deployed.

Not Cloud KMS: software keys in this process, no IAM, no HSM. The real google-cloud-kms client talks
to it over an insecure loopback channel, so CloudKmsSigner runs its real request and response path
(proto messages, CRC32C fields, status codes). Methods: GetPublicKey, AsymmetricSign, CreateCryptoKey,
GetCryptoKeyVersion, DestroyCryptoKeyVersion. `corrupt` makes it misbehave on request, to prove the
integrity checks; `delay` makes each signature wait, as a KMS round trip does; `sign_error` makes
AsymmetricSign fail with a status; `forbidden` names answer PERMISSION_DENIED (no IAM here otherwise);
`destroyed` records every DestroyCryptoKeyVersion accepted.
"""

import dataclasses
import threading
import time
from concurrent import futures

import google_crc32c
import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from google.cloud import kms

SERVICE = "google.cloud.kms.v1.KeyManagementService"
Algorithm = kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm
State = kms.CryptoKeyVersion.CryptoKeyVersionState

_HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
# What KMS signs with, per algorithm family: (key factory, hash name or None for Ed25519, padding).
_RSA_BITS = {"2048": 2048, "3072": 3072, "4096": 4096}

# The ways the stand-in can misbehave, each caught by one of CloudKmsSigner's checks.
CORRUPTIONS = frozenset({
    "digest_in_transit",   # the digest changes on the way: KMS sees a CRC32C mismatch, INVALID_ARGUMENT
    "unverified_digest",   # an answer that does not confirm the request's CRC32C
    "signature",           # one signature byte flipped after its CRC32C was computed
    "signature_crc32c",    # the CRC32C field itself wrong
    "name",                # the answer names another key version
    "pem",                 # GetPublicKey's PEM does not match its CRC32C
})


def crc32c(data):
    return google_crc32c.value(data)


def new_private_key(algorithm):
    """A software key for a KMS signing algorithm."""
    name = Algorithm(algorithm).name
    if name == "EC_SIGN_P256_SHA256":
        return ec.generate_private_key(ec.SECP256R1())
    if name == "EC_SIGN_P384_SHA384":
        return ec.generate_private_key(ec.SECP384R1())
    if name == "EC_SIGN_SECP256K1_SHA256":
        return ec.generate_private_key(ec.SECP256K1())
    if name == "EC_SIGN_ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    if name.startswith(("RSA_SIGN_PSS_", "RSA_SIGN_PKCS1_")):
        return rsa.generate_private_key(65537, _RSA_BITS[name.split("_")[3]])
    raise ValueError(f"the stand-in does not do {name}")


@dataclasses.dataclass
class Version:
    """One key version: its software key, algorithm, state and protection level."""

    name: str
    algorithm: int
    private_key: object
    protection_level: int = kms.ProtectionLevel.HSM
    state: int = State.ENABLED


class KmsStandIn:
    """The stand-in server; `client()` gives a real KeyManagementServiceClient bound to it."""

    def __init__(self, port=0):
        self.versions = {}
        self.crypto_keys = {}
        self.corrupt = set()      # names from CORRUPTIONS
        self.delay = 0.0          # seconds each AsymmetricSign waits
        self.hang = None          # a threading.Event: AsymmetricSign waits until it is set
        self.sign_requests = []   # every AsymmetricSignRequest received, in order
        self.signatures = 0
        self.public_key_requests = 0
        self.sign_error = None    # a grpc.StatusCode: AsymmetricSign fails with it
        self.forbidden = set()    # key version names the caller may not use: PERMISSION_DENIED
        self.destroyed = []       # names of the key versions scheduled for destruction, in order
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "GetPublicKey": (self.get_public_key, kms.GetPublicKeyRequest, kms.PublicKey),
            "AsymmetricSign": (self.asymmetric_sign, kms.AsymmetricSignRequest, kms.AsymmetricSignResponse),
            "CreateCryptoKey": (self.create_crypto_key, kms.CreateCryptoKeyRequest, kms.CryptoKey),
            "GetCryptoKeyVersion": (self.get_crypto_key_version, kms.GetCryptoKeyVersionRequest,
                                    kms.CryptoKeyVersion),
            "DestroyCryptoKeyVersion": (self.destroy_crypto_key_version, kms.DestroyCryptoKeyVersionRequest,
                                        kms.CryptoKeyVersion),
        }
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            method: grpc.unary_unary_rpc_method_handler(
                self._guarded(handler), request_deserializer=request.deserialize,
                response_serializer=response.serialize)
            for method, (handler, request, response) in handlers.items()})])
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self._channels = []

    def start(self):
        self._server.start()
        return self

    def stop(self):
        for channel in self._channels:
            channel.close()
        self._server.stop(grace=None).wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def client(self):
        """The real google-cloud-kms client, over an insecure loopback channel to this stand-in."""
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self._channels.append(channel)
        transport = kms.KeyManagementServiceClient.get_transport_class("grpc")(channel=channel)
        return kms.KeyManagementServiceClient(transport=transport)

    def add_key(self, algorithm, key_ring="projects/p/locations/global/keyRings/standin",
                crypto_key=None, private_key=None, protection_level=kms.ProtectionLevel.HSM):
        """A key version with a fresh (or given) software key; returns its name."""
        algorithm = Algorithm(algorithm)
        crypto_key = crypto_key or algorithm.name.lower().replace("_", "-")
        name = f"{key_ring}/cryptoKeys/{crypto_key}/cryptoKeyVersions/1"
        with self._lock:
            while name in self.versions:
                number = int(name.rsplit("/", 1)[1]) + 1
                name = f"{name.rsplit('/', 1)[0]}/{number}"
            self.versions[name] = Version(name, algorithm, private_key or new_private_key(algorithm),
                                          protection_level)
        return name

    # --- the RPCs ---

    def _guarded(self, handler):
        def call(request, context):
            try:
                return handler(request, context)
            except _Abort as abort:
                context.abort(abort.code, abort.message)
        return call

    def add_symmetric_key(self, key_ring="projects/p/locations/global/keyRings/standin", crypto_key="symmetric"):
        """A GOOGLE_SYMMETRIC_ENCRYPTION key version (no public key, cannot sign); returns its name."""
        name = f"{key_ring}/cryptoKeys/{crypto_key}/cryptoKeyVersions/1"
        with self._lock:
            self.versions[name] = Version(name, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, None)
        return name

    def _version(self, name):
        if name in self.forbidden:
            raise _Abort(grpc.StatusCode.PERMISSION_DENIED, f"Permission denied on resource {name}.")
        version = self.versions.get(name)
        if version is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"{name} not found.")
        return version

    def get_public_key(self, request, context):
        self.public_key_requests += 1
        version = self._version(request.name)
        if version.state != State.ENABLED:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"{request.name} is not enabled.")
        if version.private_key is None:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"{request.name} is not an asymmetric key.")
        pem = version.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        pem_crc = crc32c(pem.encode())
        if "pem" in self.corrupt:
            pem = pem.replace("A", "B", 1)
        return kms.PublicKey(pem=pem, pem_crc32c=pem_crc, algorithm=version.algorithm, name=version.name,
                             protection_level=version.protection_level)

    def asymmetric_sign(self, request, context):
        self.sign_requests.append(request)
        version = self._version(request.name)
        if version.state != State.ENABLED:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"{request.name} is not enabled.")
        if self.sign_error is not None:
            raise _Abort(self.sign_error, "The stand-in was told to fail AsymmetricSign.")
        if self.delay:
            time.sleep(self.delay)
        if self.hang is not None:
            self.hang.wait()
        algorithm = Algorithm(version.algorithm).name
        if algorithm == "EC_SIGN_ED25519":
            data, data_crc = request.data, request.data_crc32c
            if data_crc is not None and crc32c(data) != data_crc:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "data_crc32c did not match data.")
            signature = version.private_key.sign(data)
            verified = {"verified_data_crc32c": data_crc is not None}
        else:
            hash_name = algorithm.rsplit("_", 1)[1].lower()
            digest = getattr(request.digest, hash_name)
            if "digest_in_transit" in self.corrupt:
                digest = bytes([digest[0] ^ 1]) + digest[1:]
            if not digest or len(digest) != _HASHES[hash_name].digest_size:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{algorithm} needs a {hash_name} digest.")
            if request.digest_crc32c is not None and crc32c(digest) != request.digest_crc32c:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "The checksum in field digest_crc32c did "
                                                               "not match the data in field digest.")
            signature = self._sign_digest(version.private_key, algorithm, hash_name, digest)
            verified = {"verified_digest_crc32c": request.digest_crc32c is not None
                        and "unverified_digest" not in self.corrupt}
        signature_crc = crc32c(signature) + (1 if "signature_crc32c" in self.corrupt else 0)
        if "signature" in self.corrupt:
            signature = signature[:-1] + bytes([signature[-1] ^ 0x55])
        with self._lock:
            self.signatures += 1
        name = version.name + "0" if "name" in self.corrupt else version.name
        return kms.AsymmetricSignResponse(signature=signature, signature_crc32c=signature_crc, name=name,
                                          protection_level=version.protection_level, **verified)

    @staticmethod
    def _sign_digest(private_key, algorithm, hash_name, digest):
        prehashed = utils.Prehashed(_HASHES[hash_name])
        if algorithm.startswith("EC_"):
            return private_key.sign(digest, ec.ECDSA(prehashed))
        if algorithm.startswith("RSA_SIGN_PSS_"):
            # Cloud KMS: MGF1 with the same hash, salt length = digest length.
            pss = padding.PSS(padding.MGF1(_HASHES[hash_name]), _HASHES[hash_name].digest_size)
            return private_key.sign(digest, pss, prehashed)
        return private_key.sign(digest, padding.PKCS1v15(), prehashed)

    def create_crypto_key(self, request, context):
        crypto_key = request.crypto_key
        if crypto_key.purpose != kms.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "The stand-in creates ASYMMETRIC_SIGN keys only.")
        name = f"{request.parent}/cryptoKeys/{request.crypto_key_id}"
        if name in self.crypto_keys:
            raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists.")
        template = crypto_key.version_template
        try:
            private_key = new_private_key(template.algorithm)
        except ValueError as error:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        created = kms.CryptoKey(name=name, purpose=crypto_key.purpose, version_template=template,
                                labels=dict(crypto_key.labels))
        self.crypto_keys[name] = created
        if not request.skip_initial_version_creation:
            self.add_key(template.algorithm, key_ring=request.parent, crypto_key=request.crypto_key_id,
                         private_key=private_key,
                         protection_level=template.protection_level or kms.ProtectionLevel.SOFTWARE)
        return created

    def get_crypto_key_version(self, request, context):
        return self._as_message(self._version(request.name))

    def destroy_crypto_key_version(self, request, context):
        version = self._version(request.name)
        if version.state in (State.DESTROY_SCHEDULED, State.DESTROYED):
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"{request.name} is already {State(version.state).name}.")
        version.state = State.DESTROY_SCHEDULED
        self.destroyed.append(version.name)
        return self._as_message(version)

    @staticmethod
    def _as_message(version):
        return kms.CryptoKeyVersion(name=version.name, state=version.state, algorithm=version.algorithm,
                                    protection_level=version.protection_level)


class _Abort(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def main(argv=None):
    """Serve the stand-in on 127.0.0.1:PORT until terminated (`make run`)."""
    import argparse
    import signal
    parser = argparse.ArgumentParser(prog="python -m devserver.kms_standin", description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = KmsStandIn(args.port).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"KMS stand-in (software keys, not Cloud KMS) on 127.0.0.1:{server.port}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()


if __name__ == "__main__":
    main()
