"""Calling a signer from inside a handshake: on a worker thread, bounded in time, its answer checked.

OpenSSL calls our hook in the middle of SSL_do_handshake, on the thread running the handshake.
The signer runs on a worker thread so the hook can stop waiting for it: at the end of the
connection's time (its socket timeout, or the moment the call's deadline shuts the socket down)
or the identity's sign_timeout. A signer that never answers keeps only its own worker.
"""

import dataclasses
import os
import queue
import select
import threading
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from ..errors import SignerError
from .base import SCHEMES

MAX_WORKERS = 64  # more signatures waiting than this queue up and end at their deadline
_POLL_SLICE = 0.05  # how often a waiting hook checks whether its connection was shut down
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                                          "sha512": hashes.SHA512}
_HANGUP = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0)


@dataclasses.dataclass
class _Job:
    """One signature to make on a worker."""

    call: Callable[[], object]
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as e:  # noqa: BLE001 - any failure of the signer is the caller's signer_failed
            self.error = e
        finally:
            self.call = _done  # drop the references to the signer and the data
            self.done.set()


def _done() -> None:
    """Placeholder for a job's call once it ran."""


class _Workers:
    """Daemon threads running signatures, made on demand up to MAX_WORKERS and reused."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = self._count = 0

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
            elif self._count < MAX_WORKERS:
                self._count += 1
                threading.Thread(target=self._run, name="dyncert-signer", daemon=True).start()
        self._jobs.put(job)

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            jobs.get().run()
            with self._lock:
                self._idle += 1


_workers = _Workers()
os.register_at_fork(after_in_child=_workers._reset)  # the parent's workers do not exist in a child


# --- the handshake this thread is running --------------------------------------------------

_local = threading.local()


def begin(timeout: float | None, fd: int | None) -> tuple[object, object]:
    """A handshake starts on this thread: bound its signatures by `timeout` (seconds) and `fd`'s shutdown."""
    saved = (getattr(_local, "end", None), getattr(_local, "fd", None))
    _local.end = time.monotonic() + timeout if timeout else None
    _local.fd = fd
    _local.failure = None
    return saved


def end(saved: tuple[object, object]) -> None:
    """The handshake is over: restore what begin() replaced."""
    _local.end, _local.fd = saved


def take_failure() -> SignerError | None:
    """The signer failure recorded by a hook on this thread since begin(), once."""
    failure: SignerError | None = getattr(_local, "failure", None)
    _local.failure = None
    return failure


def record_failure(error: SignerError) -> None:
    """A hook failed: keep why for the handshake's caller (the hook itself can only return 0)."""
    _local.failure = error


def _hung_up(fd: int | None) -> bool:
    """True once the connection's socket was shut down (the call's deadline) or closed by the peer."""
    if fd is None or fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, _HANGUP)
    return any(events & _HANGUP for _, events in poller.poll(0))


def call_signer(signer: object, data: bytes, scheme: str, sign_timeout: float) -> object:
    """signer.sign(data, scheme) on a worker, within the bounds of this thread's handshake."""
    job = _Job(lambda: signer.sign(data, scheme))  # type: ignore[attr-defined]
    _workers.submit(job)
    started = time.monotonic()
    end_at = started + sign_timeout
    connection_end = getattr(_local, "end", None)
    bounded_by = f"its sign_timeout of {sign_timeout:g} s"
    if connection_end is not None and connection_end < end_at:
        end_at, bounded_by = connection_end, "the connection's timeout"
    fd = getattr(_local, "fd", None)
    while not job.done.wait(max(0.0, min(_POLL_SLICE, end_at - time.monotonic()))):
        if _hung_up(fd):
            raise SignerError(f"The signer did not answer before the connection ended (the call's deadline) "
                              f"({scheme}, waited {time.monotonic() - started:.3g} s).")
        if time.monotonic() >= end_at:
            raise SignerError(f"The signer did not answer within {bounded_by} ({scheme}).")
    if job.error is not None:
        error = SignerError(f"The signer failed to sign ({scheme}): {type(job.error).__name__}: "
                            f"{str(job.error)[:200]}")
        error.__cause__ = job.error
        raise error
    return job.result


def checked_signature(public_key: object, result: object, data: bytes, scheme: str, max_size: int) -> bytes:
    """The signer's answer as bytes, verified against its public key; SignerError for anything else."""
    if isinstance(result, (bytearray, memoryview)):
        result = bytes(result)
    if not isinstance(result, bytes):
        raise SignerError(f"Expected the signer to return the signature as bytes ({scheme}), "
                          f"found {type(result).__name__}.")
    if not 0 < len(result) <= max_size:
        raise SignerError(f"Expected a signature of at most {max_size} bytes ({scheme}), found {len(result)} bytes.")
    spec = SCHEMES[scheme]
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(result, data, ec.ECDSA(utils.Prehashed(_HASHES[spec.hash or ""]())))
        elif isinstance(public_key, rsa.RSAPublicKey):
            chosen = _HASHES[spec.hash or ""]()
            pad: padding.AsymmetricPadding = padding.PKCS1v15() if spec.padding == "pkcs1" else \
                padding.PSS(padding.MGF1(chosen), padding.PSS.DIGEST_LENGTH)
            public_key.verify(result, data, pad, utils.Prehashed(chosen))
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(result, data)
    except (InvalidSignature, ValueError) as e:
        raise SignerError(f"The signer returned a signature that does not verify with its public key "
                          f"({scheme}): wrong key, wrong scheme or corrupt.") from e
    return result


def sign(signer: object, public_key: object, data: bytes, scheme: str, sign_timeout: float, max_size: int) -> bytes:
    """A verified signature of `data` under `scheme`, or SignerError (the signer's own error as its cause)."""
    return checked_signature(public_key, call_signer(signer, data, scheme, sign_timeout), data, scheme, max_size)
