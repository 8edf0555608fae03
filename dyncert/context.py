"""SSLContext for a ClientIdentity loaded from memory (memfd, else pipes, else a sealed temp file), with an LRU cache.

Python 3's ssl loads a certificate and key only from a path (cpython issues #60691,
#118557, #129216 are open). We hand OpenSSL a path that never holds a plaintext key:
  tier 1: an anonymous memory file (`os.memfd_create`) opened as /proc/self/fd/N;
  pipe tier (Linux without memfd, e.g. the Cloud CLI's Python 3.12): two anonymous pipes,
          chain and key, opened as /proc/self/fd/N: nothing on any file system, not even sealed;
  tier 2: a 0600 file in this process's private 0700 directory holding the key re-encrypted
          under a one-time random password, unlinked as soon as OpenSSL has read it.
"""

import atexit
import collections
import errno
import hashlib
import os
import re
import secrets
import ssl
import stat
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias, TypeGuard, Union, cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import der, pbe, reuse
from .errors import InputError
from .identity import ClientIdentity, PemText, parse_ca_bundle

if TYPE_CHECKING:
    from .signers import _context
    from .signers.identity import SignerIdentity

# What presents a client certificate: a key in memory, or a signer holding it elsewhere.
AnyIdentity: TypeAlias = Union[ClientIdentity, "SignerIdentity"]

# Tests (or a platform without a usable /proc) switch tier 1 off.
MEMFD_ENABLED = True
# Tests switch the pipe tier off to reach the sealed temp file.
PIPE_ENABLED = True

TLS_VERSIONS = {None: None, "": None, "TLS": None,
                "TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}
_ACCEPTED = "TLS (negotiate, 1.2 or newer), TLSv1_2, TLSv1_3"
_HASHED_NAME = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")

# ca_certs: PEM text (str or bytes), or the path of a CA file or hashed directory.
CaCerts: TypeAlias = str | bytes | os.PathLike[str]
# tls_version: None or "TLS" (negotiate 1.2+), "TLSv1_2", "TLSv1_3", or an ssl.TLSVersion.
TLSVersionLike: TypeAlias = str | ssl.TLSVersion | None
_Paths: TypeAlias = tuple[str | None, str | None, str]  # (cafile, capath, source)


def set_memfd_enabled(enabled: bool) -> None:
    """Turn tier 1 (memfd) on or off; off forces the sealed temp file tier."""
    global MEMFD_ENABLED
    MEMFD_ENABLED = bool(enabled)


def memfd_available() -> bool:
    """True when this interpreter has os.memfd_create and tier 1 is enabled."""
    return MEMFD_ENABLED and hasattr(os, "memfd_create")


def set_pipe_enabled(enabled: bool) -> None:
    """Turn the pipe tier on or off; off (with memfd off) forces the sealed temp file tier."""
    global PIPE_ENABLED
    PIPE_ENABLED = bool(enabled)


def pipe_available() -> bool:
    """True when the pipe tier is enabled and this system reads a pipe through /proc/self/fd (Linux)."""
    return PIPE_ENABLED and _pipe_works()


def parse_tls_version(value: object) -> ssl.TLSVersion | None:
    """None/'TLS' -> None (negotiate, at least 1.2); 'TLSv1_2'/'TLSv1_3' or ssl.TLSVersion -> that version."""
    if isinstance(value, ssl.TLSVersion):
        if value in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            return value
        value = value.name
    if (value is None or isinstance(value, str)) and value in TLS_VERSIONS:
        return TLS_VERSIONS[value]
    shown = value if isinstance(value, str) and len(value) <= 40 else type(value).__name__
    raise InputError("unsupported_tls_version", f"Expected a TLS version among {_ACCEPTED}, found {shown!r}.")


# --- CA trust -----------------------------------------------------------------------------

_trust_lock = threading.Lock()
_configured_trust: tuple[str | None, str | None] | None = None  # (cafile, capath) set by configure_default_trust
_auto_trust: _Paths | None = None  # resolved once from OpenSSL's paths / certifi


def configure_default_trust(cafile: str | os.PathLike[str] | None = None,
                            capath: str | os.PathLike[str] | None = None) -> None:
    """Set the CA file and/or hashed directory used when a call gives no ca_certs; both None resets."""
    global _configured_trust
    for path, exists, what in ((cafile, os.path.isfile, "file"), (capath, os.path.isdir, "directory")):
        if path is not None and not exists(path):
            raise InputError("invalid_ca_certs", f"Expected an existing CA {what}, "
                             f"found nothing usable at {os.fspath(path)!r}.")
    with _trust_lock:
        _configured_trust = None if cafile is None and capath is None else (
            None if cafile is None else os.fspath(cafile), None if capath is None else os.fspath(capath))


def _has_hashed_certs(directory: str) -> bool:
    """True if `directory` holds OpenSSL's <hash>.N links (c_rehash / update-ca-certificates)."""
    try:
        with os.scandir(directory) as entries:
            return any(_HASHED_NAME.match(e.name) for e in entries)
    except OSError:
        return False


def _resolve_auto_trust() -> _Paths:
    """OpenSSL's hashed directory if present, else its CA file, else certifi's bundle.

    The hashed directory is preferred: OpenSSL reads only the issuers it needs, at verify
    time (~0.3 ms and ~20 KB per context), where a bundle file is parsed into every
    context (~50 ms and ~0.75 MB each).
    """
    paths = ssl.get_default_verify_paths()
    if paths.capath and _has_hashed_certs(paths.capath):
        return (None, paths.capath, "openssl")
    if paths.cafile and os.path.isfile(paths.cafile):
        return (paths.cafile, None, "openssl")
    try:
        import certifi
    except ImportError:
        return (None, None, "none")
    return (certifi.where(), None, "certifi")


def _default_paths() -> _Paths:
    """(cafile, capath, source) of the default trust."""
    global _auto_trust
    with _trust_lock:
        if _configured_trust is not None:
            return _configured_trust + ("configured",)
        if _auto_trust is None:
            _auto_trust = _resolve_auto_trust()
        return _auto_trust


def default_trust() -> dict[str, str | None]:
    """The default trust as a dict for status pages: {'cafile', 'capath', 'source'}."""
    cafile, capath, source = _default_paths()
    return {"cafile": cafile, "capath": capath, "source": source}


def _is_pem(ca_certs: object) -> TypeGuard[PemText]:
    """True for PEM text (str or bytes) rather than a path."""
    if isinstance(ca_certs, str):
        return "-----BEGIN" in ca_certs
    return isinstance(ca_certs, (bytes, bytearray, memoryview)) and b"-----BEGIN" in bytes(ca_certs)


def _load_locations(ctx: ssl.SSLContext, cafile: str | None = None, capath: str | None = None,
                    cadata: str | None = None) -> None:
    """load_verify_locations, its failures as invalid_ca_certs."""
    try:
        ctx.load_verify_locations(cafile=cafile, capath=capath, cadata=cadata)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise InputError("invalid_ca_certs", "Expected loadable CA certificates, found "
                         f"{'PEM text' if cadata else repr(cafile or capath)} OpenSSL would not load.") from e


def load_trust(ctx: ssl.SSLContext, ca_certs: CaCerts | None = None) -> None:
    """Trust `ca_certs` (PEM text, a CA file or hashed directory path) or, when None, the default trust."""
    if ca_certs is None:
        cafile, capath, _ = _default_paths()
        if cafile or capath:
            _load_locations(ctx, cafile=cafile, capath=capath)
        return
    if _is_pem(ca_certs):
        _load_locations(ctx, cadata=parse_ca_bundle(ca_certs).decode("ascii"))
        return
    if isinstance(ca_certs, (str, os.PathLike)):
        path = os.fspath(ca_certs)
        if os.path.isfile(path):
            return _load_locations(ctx, cafile=path)
        if os.path.isdir(path):
            return _load_locations(ctx, capath=path)
        raise InputError("invalid_ca_certs", f"Expected PEM CA certificates or an existing path, found {path!r}.")
    raise InputError("invalid_ca_certs", "Expected CA certificates as PEM text or a path, "
                     f"found {type(ca_certs).__name__}.")


def _trust_key(ca_certs: CaCerts | None) -> tuple[str | bytes | None, ...]:
    """Cache-key part for the trust: content hash of PEM, path string, or the current default."""
    if ca_certs is None:
        return ("default",) + _default_paths()
    if _is_pem(ca_certs):
        data = ca_certs.encode("utf-8") if isinstance(ca_certs, str) else bytes(ca_certs)
        return ("pem", hashlib.sha256(data).hexdigest())
    return ("path", os.fspath(ca_certs))


# --- the identity ------------------------------------------------------------------------

def _write_all(fd: int, data: bytes) -> None:
    """os.write until everything is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _load_chain(ctx: ssl.SSLContext, path: str, password: bytes | Callable[[], bytes] | None = None) -> None:
    """load_cert_chain, its failures as input errors (they mean the identity was not validated)."""
    try:
        ctx.load_cert_chain(path, password=password)
    except ssl.SSLError as e:
        reason = getattr(e, "reason", None) or ""
        # A key of another type than the certificate's lands in an empty slot: NO_CERTIFICATE_ASSIGNED.
        if reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
            raise InputError("key_mismatch",
                             "OpenSSL found that the private key does not match the certificate.") from e
        if reason in ("EE_KEY_TOO_SMALL", "CA_MD_TOO_WEAK", "CA_KEY_TOO_SMALL"):
            raise InputError("invalid_certificate", f"OpenSSL refused the certificate chain ({reason.lower()}).") from e
        raise InputError("invalid_key", "OpenSSL could not load the certificate and key "
                         f"({reason or 'unknown reason'}).") from e


def _no_password() -> bytes:
    """Password callback for keys that are plaintext: without one, OpenSSL would ask on the terminal and wait."""
    return b""


def _load_memfd(ctx: ssl.SSLContext, identity: ClientIdentity) -> bool:
    """Tier 1: write chain+key into an anonymous memory file and load it by its /proc path; False if unusable."""
    try:
        fd = os.memfd_create("dyncert", getattr(os, "MFD_CLOEXEC", 0))
    except OSError:
        return False  # e.g. seccomp-filtered, or an old kernel
    try:
        _write_all(fd, _pem_concat(identity.chain_pem, identity.key_pem))
        try:
            _load_chain(ctx, f"/proc/self/fd/{fd}", password=_no_password)
        except FileNotFoundError:
            return False  # no /proc mounted (some sandboxes): let tier 2 try
        return True
    finally:
        os.close(fd)


def _sealed_key(key_pem: bytes, password: bytes) -> bytes:
    """The key re-encrypted under `password`, in the cheapest format OpenSSL reads.

    RSA/EC: legacy PEM encryption (AES-256-CBC, one-pass MD5 key derivation). A weak KDF
    costs nothing here because the password is 256 random bits, never reused; PKCS#8's
    PBKDF2 would add a per-load cost for no gain. Ed25519/Ed448 have no legacy form: PKCS#8.
    RSA-PSS: PKCS#8 sealed by hand (one PBKDF2 round, same reason), since cryptography
    would write it back as plain RSA and OpenSSL would find no slot for its certificate.
    """
    pkcs8_der = der.unpem(key_pem)
    if pbe.pkcs8_algorithm(pkcs8_der) == pbe.OID_RSASSA_PSS:
        return pbe.encrypt_pkcs8(pkcs8_der, password)
    key = serialization.load_pem_private_key(key_pem, None, unsafe_skip_rsa_key_validation=True)
    encryption = serialization.BestAvailableEncryption(password)
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


# One private directory per process and temp root, made once: a fresh one per build cost
# a mkdir + rmdir (most of the tier's overhead). Keyed by pid, so a forked child makes its own.
_dir_lock = threading.Lock()
_dirs: dict[tuple[int, str], str] = {}  # (pid, temp root) -> directory path


def _is_private(path: str) -> bool:
    """True if `path` is still our own directory (not a link), closed to others."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def _private_dir() -> str:
    """This process's 0700 directory under the temp root, made again if it vanished or was tampered with."""
    key = (os.getpid(), tempfile.gettempdir())
    with _dir_lock:
        path = _dirs.get(key)
        if path is None or not _is_private(path):
            path = _dirs[key] = tempfile.mkdtemp(prefix=f"dyncert-{key[0]}-")  # mode 0700
        return path


def _remove_dirs() -> None:
    """At exit: remove this process's (empty) directories; never another process's."""
    for (pid, _), path in list(_dirs.items()):
        if pid == os.getpid():
            try:
                os.rmdir(path)
            except OSError:
                pass


def _new_lock_in_child() -> None:
    """A fork while another thread held the lock must not deadlock the child."""
    global _dir_lock
    _dir_lock = threading.Lock()


atexit.register(_remove_dirs)
os.register_at_fork(after_in_child=_new_lock_in_child)


def _load_tempfile(ctx: ssl.SSLContext, identity: ClientIdentity) -> None:
    """Tier 2: a 0600 file in the private 0700 directory holding chain + key sealed under a one-time password."""
    password = secrets.token_urlsafe(32).encode("ascii")  # 256 bits, ASCII so any password callback takes it
    try:
        sealed = _sealed_key(identity.key_pem, password)
    except (ValueError, IndexError, TypeError, UnsupportedAlgorithm) as e:
        # Only an identity that skipped validation gets here; the other tiers let OpenSSL say the same.
        raise InputError("invalid_key", "Expected a private key OpenSSL can load, found one that does not parse.") from e
    data = _pem_concat(identity.chain_pem, sealed)
    path = os.path.join(_private_dir(), secrets.token_hex(8) + ".pem")  # unique: builds run in parallel threads
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        _load_chain(ctx, path, password=password)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _pem_concat(chain_pem: bytes, key_pem: bytes) -> bytes:
    """Chain then key, with a line break between."""
    return chain_pem + (b"" if chain_pem.endswith(b"\n") else b"\n") + key_pem


# --- the pipe tier ---------------------------------------------------------------------------
# Opening /proc/self/fd/N of an anonymous pipe on Linux gives a new reader of that pipe without
# waiting for a writer (fifo_open skips the wait for pipefs); with every write end closed it
# reads the data, then EOF. A pipe is read once, so chain and key get a pipe each (OpenSSL opens
# certfile and keyfile once apiece; a certfile holding both would be opened twice).

_PIPE_DEFAULT_BYTES = 65536  # Linux's default pipe capacity; more needs F_SETPIPE_SZ
_pipe_probe: "bool | None" = None  # None until probed, once per process
# Larger data goes to the sealed file: a pipe stays within what any user may ask for (even with
# CAP_SYS_RESOURCE, which could pin more kernel memory). Read from /proc by the probe.
_pipe_max_bytes = 1 << 20

# A child forked while a write end is open would keep it open, and OpenSSL's read in the
# parent would never see EOF (a hang, not an error). os.fork() waits for this lock, so no
# child is made between a pipe's creation and the close of its write end. (subprocess
# children exec at once and the write ends are close-on-exec.) Re-entrant: a signal handler
# forking in the thread that holds it must not deadlock.
_pipe_lock = threading.RLock()


def _pipe_lock_before_fork() -> None:
    """Hold the pipe lock across os.fork(): no write end half-filled in the child."""
    _pipe_lock.acquire()


def _pipe_lock_after_fork_in_parent() -> None:
    """Release the pipe lock taken before the fork."""
    _pipe_lock.release()


def _pipe_lock_in_child() -> None:
    """The child starts with a fresh lock (the parent's copy is held)."""
    global _pipe_lock
    _pipe_lock = threading.RLock()


os.register_at_fork(before=_pipe_lock_before_fork, after_in_parent=_pipe_lock_after_fork_in_parent,
                    after_in_child=_pipe_lock_in_child)


def _filled_pipe(data: bytes) -> int:
    """The read end of a new pipe holding `data`, its write end closed; OSError if it does not fit."""
    if len(data) > _pipe_max_bytes:
        raise OSError(errno.EFBIG, f"{len(data)} bytes exceed the pipe limit of {_pipe_max_bytes}")
    with _pipe_lock:
        # Non-blocking: data larger than the pipe fails at once (BlockingIOError) instead of hanging.
        r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            if len(data) > _PIPE_DEFAULT_BYTES:
                import fcntl  # Linux only, like the tier
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, len(data))  # EPERM past the user's pipe limits
            _write_all(w, data)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
    return r


def _pipe_works() -> bool:
    """Whether a pipe reads back through /proc/self/fd here (probed once per process)."""
    global _pipe_probe
    probe = _pipe_probe
    if probe is None:
        probe = _pipe_probe = _probe_pipe()
    return probe


def _probe_pipe() -> bool:
    """Linux only (elsewhere opening a pipe by path may wait for a writer): does one read back via /proc?"""
    global _pipe_max_bytes
    if not (sys.platform.startswith("linux") and hasattr(os, "pipe2")):
        return False
    try:
        with open("/proc/sys/fs/pipe-max-size", "rb") as f:
            _pipe_max_bytes = int(f.read())
    except (OSError, ValueError):
        pass  # keep 1 MiB, Linux's default
    try:
        r = _filled_pipe(b"dyncert")
        try:
            # O_NONBLOCK: the probe itself never waits, whatever the system does with the open.
            fd = os.open(f"/proc/self/fd/{r}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                return os.read(fd, 16) == b"dyncert"
            finally:
                os.close(fd)
        finally:
            os.close(r)
    except OSError:
        return False  # no /proc mounted, or pipes refused


def _load_pipe(ctx: ssl.SSLContext, identity: ClientIdentity) -> bool:
    """Pipe tier: chain and key each through an anonymous pipe, loaded by /proc path; False if unusable.

    Any failure falls through to the next tier rather than raising: OpenSSL's decoder seeks
    back after a failed first attempt, which a pipe cannot (ESPIPE), and CPython then reports
    that stale errno as a bare OSError. The temp-file tier repeats the load and raises the
    precise error code; a valid identity (the common case) never gets there.
    """
    fds: "list[int]" = []
    try:
        try:
            fds.append(_filled_pipe(identity.chain_pem))
            fds.append(_filled_pipe(identity.key_pem))
            ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}", password=_no_password)
        except (OSError, ssl.SSLError):
            return False
        return True
    finally:
        for fd in fds:
            os.close(fd)


def load_identity(ctx: ssl.SSLContext, identity: ClientIdentity) -> str:
    """Load identity's chain and key into ctx without a plaintext key on disk; returns 'memfd', 'pipe' or 'tempfile'."""
    if memfd_available() and _load_memfd(ctx, identity):
        return "memfd"
    if pipe_available() and _load_pipe(ctx, identity):
        return "pipe"
    _load_tempfile(ctx, identity)
    return "tempfile"


def client_context(identity: "AnyIdentity", ca_certs: CaCerts | None = None,
                   tls_version: TLSVersionLike = None) -> ssl.SSLContext:
    """A new client SSLContext presenting `identity`, verifying the peer against `ca_certs`."""
    version = parse_tls_version(tls_version)
    signed = _is_signer_identity(identity)
    if signed:
        from .signers import _binding, _context
        _binding.ensure_loaded()  # signer_unsupported before anything else, where the binding cannot work
        ctx: ssl.SSLContext = _context.SignerContext(ssl.PROTOCOL_TLS_CLIENT)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS means nothing if the peer is not verified
    ctx.check_hostname = True  # a valid certificate for another name is an impostor
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.0 and 1.1 are deprecated (RFC 8996)
    # A trusted intermediate is a trust anchor, as uploaded partner bundles expect (Python 3.13's default too).
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    # Apache's SSLVerifyClient inside a <Location> asks for the certificate after a TLS 1.3 handshake:
    # without this offer it answers 403 "Cannot perform Post-Handshake Authentication" (RFC 8446 4.6.2).
    ctx.post_handshake_auth = True
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    load_trust(ctx, ca_certs)
    if signed:
        _context.bind(cast("_context.SignerContext", ctx), cast("SignerIdentity", identity))
    else:
        load_identity(ctx, cast(ClientIdentity, identity))
    return ctx


def _is_signer_identity(identity: object) -> bool:
    """True for a SignerIdentity (imported lazily: the binding loads ctypes only when a signer is used)."""
    signers = sys.modules.get("dyncert.signers.identity")
    return signers is not None and isinstance(identity, signers.SignerIdentity)


# --- cache -------------------------------------------------------------------------------

def _env_maxsize() -> int:
    """DYNCERT_CACHE_SIZE, default 256."""
    raw = os.environ.get("DYNCERT_CACHE_SIZE", "").strip()
    if not raw:
        return 256
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"DYNCERT_CACHE_SIZE: expected a whole number, found {raw!r}") from None
    if value < 0:
        raise ValueError(f"DYNCERT_CACHE_SIZE: expected 0 or more, found {value}")
    return value


class ContextCache:
    """Thread-safe LRU of client contexts keyed by content (identity, trust, TLS version).

    Cached contexts are shared between threads: treat them as read-only.
    A rotated certificate or key has a new content_id, hence a new entry; the old one ages out.
    """

    def __init__(self, maxsize: int | None = None) -> None:
        self.maxsize = _env_maxsize() if maxsize is None else int(maxsize)
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[tuple[object, ...], ssl.SSLContext] = collections.OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def client_context(self, identity: "AnyIdentity", ca_certs: CaCerts | None = None,
                       tls_version: TLSVersionLike = None) -> ssl.SSLContext:
        """The cached context for these inputs, built (outside the lock) on a miss."""
        version = parse_tls_version(tls_version)
        key = (identity.content_id, _trust_key(ca_certs), version)
        with self._lock:
            ctx = self._entries.get(key)
            if ctx is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return ctx
            self.misses += 1
        ctx = client_context(identity, ca_certs, version)
        dropped: list[ssl.SSLContext] = []
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None:  # another thread built it meanwhile: everyone shares one
                self._entries.move_to_end(key)
                return existing
            if self.maxsize > 0:
                self._entries[key] = ctx
                while len(self._entries) > self.maxsize:
                    dropped.append(self._entries.popitem(last=False)[1])
                    self.evictions += 1
            else:
                dropped.append(ctx)  # never asked for again: a pool kept on it would only leak
        for old in dropped:
            reuse.forget(old)  # its kept-alive pools would otherwise keep it (and their sockets) forever
        return ctx

    def stats(self) -> dict[str, int]:
        """Counters and size, for status pages."""
        with self._lock:
            return {"size": len(self._entries), "maxsize": self.maxsize,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions}

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            dropped = list(self._entries.values())
            self._entries.clear()
            self.hits = self.misses = self.evictions = 0
        for old in dropped:
            reuse.forget(old)


_default_cache: ContextCache | None = None
_default_cache_lock = threading.Lock()


def default_cache() -> ContextCache:
    """The module-wide cache (created on first use, sized by DYNCERT_CACHE_SIZE)."""
    global _default_cache
    with _default_cache_lock:
        if _default_cache is None:
            _default_cache = ContextCache()
        return _default_cache


def cached_client_context(identity: "AnyIdentity", ca_certs: CaCerts | None = None,
                          tls_version: TLSVersionLike = None, cache: ContextCache | None = None) -> ssl.SSLContext:
    """client_context through `cache` (default: the module-wide cache)."""
    return (cache if cache is not None else default_cache()).client_context(identity, ca_certs, tls_version)
