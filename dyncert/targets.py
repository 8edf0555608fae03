"""Outbound targets: validation, the always-refused addresses, ALLOWED_TARGETS, checked DNS resolution."""

import dataclasses
import ipaddress
import re
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias, cast

from .errors import InputError, RemoteError

MAX_NAME = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Cloud metadata servers: reading them with our credentials' network position is SSRF's jackpot.
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata"})
METADATA_ADDRESSES = frozenset({
    ipaddress.ip_address("169.254.169.254"),  # GCE, AWS, Azure (also covered by link-local)
    ipaddress.ip_address("fd20:ce::254"),     # GCE metadata server over IPv6
    ipaddress.ip_address("fd00:ec2::254"),    # AWS metadata server over IPv6
})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: embeds an IPv4 address
# RFC 8215 local-use NAT64: the operator picks the prefix length (48 or more), so every RFC 6052 layout counts.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
_LOCAL_NAT64_LAYOUTS = (48, 56, 64, 96)
_SIIT = 0xFFFF0000  # ::ffff:0:0:0/96, RFC 6145's IPv4-translated addresses (>> 32)

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
# One socket.getaddrinfo entry: (family, type, proto, canonname, sockaddr). The sockaddr is Any as in
# typeshed's own socket types (its returned addresses are Any): (host, port[, flowinfo, scope_id]) here.
AddrInfo: TypeAlias = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a call connects (host, port) and the name it sends as SNI and verifies (server_hostname)."""

    host: str
    port: int = 443
    server_hostname: str | None = None
    # True for free request input (/api/v1/fetch): loopback, private and unspecified answers are refused too.
    public_only: bool = False

    @property
    def sni(self) -> str:
        """The name sent as SNI and checked against the peer's certificate."""
        return self.server_hostname or self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _ip(text: str) -> IPAddress | None:
    """ipaddress object for an IP literal (IPv6 may be bracketed), else None."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _rfc6052(ip: ipaddress.IPv6Address, prefix_length: int) -> ipaddress.IPv4Address:
    """The IPv4 address an RFC 6052 layout of `prefix_length` puts in `ip` (bits 64-71 are the zero u-octet)."""
    bits = f"{int(ip):0128b}"
    squeezed = bits[:64] + bits[72:] if prefix_length < 96 else bits
    return ipaddress.IPv4Address(int(squeezed[prefix_length:prefix_length + 32], 2))


def embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address an IPv6 one may carry (mapped, SIIT, compatible, 6to4, NAT64, Teredo), else ()."""
    if ip.version != 6:
        return ()
    assert isinstance(ip, ipaddress.IPv6Address)
    value = int(ip)
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if value >> 32 == _SIIT or ip in _NAT64 or (value >> 32 == 0 and value > 0xFFFF):  # or deprecated ::a.b.c.d
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:  # (server, client): either may be the address reached
        return ip.teredo
    if ip in _LOCAL_NAT64:
        return tuple(_rfc6052(ip, n) for n in _LOCAL_NAT64_LAYOUTS)
    return ()


def _as_ip(ip: str | IPAddress) -> IPAddress:
    if isinstance(ip, str):
        return ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id ("fe80::1%eth0")
    return ip


def forbidden_address(ip: str | IPAddress) -> bool:
    """True for link-local (169.254/16, fe80::/10, and IPv4 forms inside IPv6) or a metadata address."""
    ip = _as_ip(ip)
    return any(a.is_link_local or a in METADATA_ADDRESSES for a in (ip, *embedded_ipv4(ip)))


def internal_address(ip: str | IPAddress) -> bool:
    """True for loopback, private or unspecified addresses (also as IPv4 inside IPv6): this host's network."""
    ip = _as_ip(ip)
    return any(a.is_loopback or a.is_private or a.is_unspecified for a in (ip, *embedded_ipv4(ip)))


def _is_dns_name(name: str) -> bool:
    """RFC 1123 host name (ASCII, <= 253, labels 1-63 of letters/digits/hyphens) whose top label is not numeric."""
    if not name or len(name) > MAX_NAME or not name.isascii():
        return False
    labels = name.lower().split(".")
    # An all-numeric top label is refused: resolvers read "1.2.3" or "2852039166" as an IPv4 address.
    return all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def _normalize_host(host: object, what: str) -> str:
    """Lowercase DNS name without trailing dot, or compressed IP literal; InputError invalid_target if neither."""
    if not isinstance(host, str):
        raise InputError("invalid_target", f"Expected the {what} as text, found {type(host).__name__}.", what)
    ip = _ip(host)
    if ip is not None:
        return str(ip)
    name = host[:-1] if host.endswith(".") else host
    if not _is_dns_name(name):
        shown = host if len(host) <= 80 else host[:80] + "..."
        raise InputError("invalid_target", f"Expected the {what} to be a DNS name (letters, digits, hyphens; "
                         f"use the xn-- form for international names) or an IP address, found {shown!r}.", what)
    return name.lower()


def _refuse_forbidden(host: str) -> None:
    """InputError target_not_allowed for a metadata name or a link-local/metadata IP literal."""
    ip = _ip(host)
    if host.lower().rstrip(".") in METADATA_NAMES or (ip is not None and forbidden_address(ip)):
        raise InputError("target_not_allowed", f"Calls to {host!r} are always refused: link-local and "
                         "metadata-server addresses could expose the platform's credentials.", "host")


def validate_target(host: str, port: int = 443, server_hostname: str | None = None) -> Target:
    """A normalized Target, or InputError invalid_target / target_not_allowed."""
    host = _normalize_host(host, "host")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError("invalid_target", f"Expected a port from 1 to 65535, found {port!r}.", "port")
    if server_hostname is not None and server_hostname != "":
        server_hostname = _normalize_host(server_hostname, "server_hostname")
    else:
        server_hostname = None
    _refuse_forbidden(host)
    return Target(host, port, server_hostname)


# --- ALLOWED_TARGETS --------------------------------------------------------------------------

def _parse_pattern(pattern: str) -> tuple[str, int | None]:
    """'host', 'host:port', '*.example.com[:port]', '[::1]:443' or '::1' -> (host, port or None)."""
    text = pattern.strip().lower()
    port = None
    if text.startswith("["):
        inside, _, rest = text[1:].partition("]")
        host, port = inside, (rest[1:] if rest.startswith(":") else rest or None)
    elif _ip(text) is not None:
        host = text
    else:
        host, sep, port = text.rpartition(":") if ":" in text else (text, "", None)
    if port is not None:
        # ASCII digits only: str.isdigit() and int() also take "²" (an error) and "١" (read as 1).
        if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
            raise ValueError(f"ALLOWED_TARGETS: expected 'host' or 'host:port' with a port from 1 to 65535, "
                             f"found {pattern!r}")
    wildcard = host.startswith("*.")
    try:
        host = _normalize_host(host[2:] if wildcard else host, "ALLOWED_TARGETS host")
    except InputError as e:
        raise ValueError(f"ALLOWED_TARGETS: {e.message}") from None
    return ("*." + host if wildcard else host), (None if port is None else int(port))


def parse_allowed(env_value: str | Iterable[str] | None) -> list[str] | None:
    """ALLOWED_TARGETS (comma-separated patterns) -> list of normalized patterns, or None when unset/empty."""
    if env_value is None:
        return None
    if not isinstance(env_value, str):
        env_value = ",".join(env_value)
    patterns = [p for p in (item.strip() for item in env_value.split(",")) if p]
    if not patterns:
        return None
    out = []
    for pattern in patterns:
        host, port = _parse_pattern(pattern)
        shown = f"[{host}]" if ":" in host else host
        out.append(shown if port is None else f"{shown}:{port}")
    return out


def _matches(host: str, port: int, pattern: str) -> bool:
    """True if (host, port) matches one parsed pattern; '*.example.com' matches names under it at any depth."""
    pattern_host, pattern_port = _parse_pattern(pattern)
    if pattern_port is not None and pattern_port != port:
        return False
    if pattern_host.startswith("*."):
        return host.endswith(pattern_host[1:]) and _ip(host) is None
    return host == pattern_host


def check_allowed(target: Target, allowed: str | Iterable[str] | None) -> Target:
    """InputError target_not_allowed unless `target` is permitted (always refused; then `allowed`, None = any)."""
    _refuse_forbidden(target.host)
    if allowed is None:
        return target
    if isinstance(allowed, str):
        allowed = parse_allowed(allowed) or []
    if not any(_matches(target.host.lower(), target.port, pattern) for pattern in allowed):
        raise InputError("target_not_allowed", f"Expected a target listed in ALLOWED_TARGETS, found {target}.",
                         "host")
    return target


def host_allowed(host: str, port: int, allowed: Iterable[str]) -> bool:
    """True if a URL's host (name in any case, trailing dot, or IP literal) and port match one of `allowed`."""
    try:
        host = _normalize_host(host, "host")
    except InputError:
        return False  # not a name or address a pattern could list
    return any(_matches(host, port, pattern) for pattern in allowed)


# --- resolution -------------------------------------------------------------------------------

def _getaddrinfo(host: str, port: int, timeout: float) -> Sequence[AddrInfo]:
    """socket.getaddrinfo (TCP) bounded by `timeout`: the resolver call itself cannot be interrupted."""
    if _ip(host) is not None:  # a literal needs no resolver
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    box: dict[str, object] = {}  # work() leaves the addrinfo list under "result" or its OSError under "error"

    def work() -> None:
        try:
            box["result"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            box["error"] = e

    worker = threading.Thread(target=work, name="dyncert-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise RemoteError("timeout", f"DNS resolution of {host!r} took longer than {timeout:g} s.")
    if "error" in box:
        raise cast(OSError, box["error"])
    return cast(Sequence[AddrInfo], box["result"])


def resolve(target: Target, timeout: float) -> Sequence[AddrInfo]:
    """Resolve target.host to TCP addrinfo tuples, refusing the call if any address is link-local/metadata.

    Callers connect only to these checked addresses, so a name cannot be re-pointed
    (DNS rebinding) between the check and the connect.
    """
    try:
        infos = _getaddrinfo(target.host, target.port, timeout)
    except socket.gaierror as e:
        raise RemoteError("dns_failure", f"Could not resolve {target.host!r}: {e.strerror or e}.") from e
    except OSError as e:
        raise RemoteError("dns_failure", f"Could not resolve {target.host!r}: {e}.") from e
    if not infos:
        raise RemoteError("dns_failure", f"Could not resolve {target.host!r}: no addresses.")
    for info in infos:
        address = info[4][0]
        if forbidden_address(address):
            raise InputError("target_not_allowed", f"{target.host!r} resolves to {address}, a link-local or "
                             "metadata-server address: calls there are always refused.")
        if target.public_only and internal_address(address):
            raise InputError("target_not_allowed", f"{target.host!r} resolves to {address}, a loopback, private "
                             "or unspecified address: name it in ALLOWED_TARGETS to allow it.")
    return infos
