"""Application settings read once from the environment."""

import math
import os
import secrets
import string
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
# Bits an admin token must carry: out of reach of any guessing rate, so the sign-in limiter can let
# the right token in while an attacker is locked out (handlers/auth.check_credential).
MIN_TOKEN_BITS = 128
_CHARSETS = (string.ascii_lowercase, string.ascii_uppercase, string.digits, string.punctuation)


class SettingsError(ValueError):
    """The environment asks for something the app refuses to run with."""


def _flag(value, default=False):
    """Read a boolean environment value ("1", "true", "yes" are true)."""
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Everything the app reads from its environment, resolved once."""

    admin_token: str = ""
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    on_app_engine: bool = False
    https_verify: bool = True
    ca_file: str | None = None
    allowed_targets: str = ""
    kms_key_name: str = ""
    kms_key_ring: str = ""          # where POST .../csr {"key_location": "cloud_kms"} creates keys
    kms_protection: str = "HSM"     # HSM or SOFTWARE, for the keys created there
    kms_endpoint: str = ""          # tests and `make run`: a loopback KMS stand-in, over plain gRPC
    local_kek_file: str = os.path.join(HERE, "local", "kek.bin")
    allow_local_kek_on_app_engine: bool = False
    secure_cookies: bool = False
    connect_timeout: float = 5.0
    io_timeout: float = 10.0
    call_deadline: float = 30.0
    redis_cache_url: str = ""  # unset: no global cache (every entity read goes to Datastore)
    redis_timeout: float = 0.5


def from_environ(environ=None, **overrides):
    """Build Settings from `environ` (default os.environ), then apply overrides."""
    env = os.environ if environ is None else environ
    on_gae = env.get("GAE_ENV", "") == "standard"
    values = dict(
        admin_token=env.get("ADMIN_TOKEN", ""),
        on_app_engine=on_gae,
        # PEP 493: PYTHONHTTPSVERIFY=0 turns off verification of server-only fetches.
        https_verify=env.get("PYTHONHTTPSVERIFY", "1") != "0",
        ca_file=env.get("CA_FILE") or None,
        allowed_targets=env.get("ALLOWED_TARGETS", ""),
        kms_key_name=env.get("KMS_KEY_NAME", ""),
        kms_key_ring=env.get("KMS_KEY_RING", ""),
        kms_protection=(env.get("KMS_PROTECTION") or "HSM").strip().upper(),
        kms_endpoint=env.get("KMS_ENDPOINT", ""),
        local_kek_file=env.get("LOCAL_KEK_FILE") or os.path.join(HERE, "local", "kek.bin"),
        allow_local_kek_on_app_engine=_flag(env.get("ALLOW_LOCAL_KEK")),
        # App Engine serves over HTTPS, so its cookies must never travel in clear.
        secure_cookies=on_gae or _flag(env.get("SECURE_COOKIES")),
        connect_timeout=float(env.get("CONNECT_TIMEOUT", "5")),
        io_timeout=float(env.get("IO_TIMEOUT", "10")),
        # No outbound call lasts longer, however slowly the peer sends (each read has io_timeout too).
        call_deadline=float(env.get("CALL_DEADLINE", "30")),
        # ndb's global cache on Redis (Memorystore): identities read from it, not from Datastore, on every call.
        redis_cache_url=env.get("REDIS_CACHE_URL", ""),
        # A Redis that stops answering must cost a call this long at most, not redis-py's 5 s default.
        redis_timeout=float(env.get("REDIS_TIMEOUT", "0.5")),
    )
    secret = env.get("SESSION_SECRET")
    if secret:
        values["session_secret"] = secret.encode()
    values.update(overrides)
    return Settings(**values)


def token_bits(token):
    """Estimated entropy of a random token: length x log2(the character classes it draws from).

    Lower case, upper case, digits and ASCII punctuation count whole once any of their characters
    appears; anything else counts as one more class of 128 (an estimate, not a proof of randomness).
    """
    pool = sum(len(chars) for chars in _CHARSETS if any(c in chars for c in token))
    if any(not any(c in chars for chars in _CHARSETS) for c in token):
        pool += 128
    return len(token) * math.log2(pool) if pool > 1 else 0.0


def check(settings):
    """Refuse to start with an unsafe setting; returns `settings`."""
    if settings.admin_token:
        bits = token_bits(settings.admin_token)
        if bits < MIN_TOKEN_BITS:
            raise SettingsError(f"ADMIN_TOKEN must carry at least {MIN_TOKEN_BITS} bits of entropy; this one has "
                                f"about {bits:.0f} ({len(settings.admin_token)} characters from the classes it uses). "
                                f"Unset it and `make run` generates one (256 bits), or use "
                                f"`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`.")
    if settings.kms_protection not in KMS_PROTECTIONS:
        raise SettingsError(f"KMS_PROTECTION must be one of {', '.join(KMS_PROTECTIONS)}, "
                            f"found {settings.kms_protection[:40]!r}.")
    if settings.kms_endpoint and not _loopback_endpoint(settings.kms_endpoint):
        raise SettingsError("KMS_ENDPOINT speaks plain gRPC, so it must be a loopback host:port "
                            f"(a local stand-in), found {settings.kms_endpoint[:80]!r}.")
    return settings


KMS_PROTECTIONS = ("HSM", "SOFTWARE")


def _loopback_endpoint(endpoint):
    """True for 127.0.0.1:PORT, [::1]:PORT or localhost:PORT."""
    host, _, port = endpoint.rpartition(":")
    return host in ("127.0.0.1", "[::1]", "localhost") and port.isdigit() and 0 < int(port) < 65536
