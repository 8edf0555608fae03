"""dyncert.targets: validation, always-refused addresses, ALLOWED_TARGETS, checked resolution."""

import socket

import pytest

from dyncert import targets
from dyncert.errors import InputError, RemoteError
from dyncert.targets import Target


@pytest.mark.parametrize("host, port, sni, expected", [
    ("example.com", 443, None, Target("example.com", 443, None)),
    ("Example.COM.", 8443, None, Target("example.com", 8443, None)),
    ("peer-1.internal.example", 1, "Peer.Example.com", Target("peer-1.internal.example", 1, "peer.example.com")),
    ("127.0.0.1", 65535, "localhost", Target("127.0.0.1", 65535, "localhost")),
    ("::1", 443, "", Target("::1", 443, None)),
    ("[2001:DB8::1]", 443, None, Target("2001:db8::1", 443, None)),
    ("localhost", 443, "10.0.0.1", Target("localhost", 443, "10.0.0.1")),
    ("xn--caf-dma.example", 443, None, Target("xn--caf-dma.example", 443, None)),
    ("a" * 63 + ".example.com", 443, None, Target("a" * 63 + ".example.com", 443, None)),
])
def test_valid_targets(host, port, sni, expected):
    assert targets.validate_target(host, port, sni) == expected


@pytest.mark.parametrize("host, port, sni", [
    ("", 443, None),
    ("exa mple.com", 443, None),
    ("-example.com", 443, None),
    ("example-.com", 443, None),
    ("ex_ample.com", 443, None),
    ("a" * 64 + ".example.com", 443, None),
    (("a" * 62 + ".") * 4 + "com", 443, None),  # 255 characters
    ("example..com", 443, None),
    ("café.example", 443, None),
    ("1.2.3", 443, None),          # resolvers read this as 1.2.0.3
    ("2852039166", 443, None),     # ... and this as 169.254.169.254
    ("http://example.com", 443, None),
    ("example.com:443", 443, None),
    (None, 443, None),
    ("example.com", 0, None),
    ("example.com", 65536, None),
    ("example.com", "443", None),
    ("example.com", True, None),
    ("example.com", 443, "bad name!"),
])
def test_invalid_targets(host, port, sni):
    with pytest.raises(InputError) as e:
        targets.validate_target(host, port, sni)
    assert e.value.code == "invalid_target"


@pytest.mark.parametrize("host", [
    "169.254.169.254", "169.254.0.1", "fe80::1", "FE80::abcd", "febf::1",
    "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",
    "fd20:ce::254", "fd00:ec2::254",
    "metadata.google.internal", "METADATA.Google.Internal.", "metadata", "Metadata.",
])
def test_always_refused(host):
    with pytest.raises(InputError) as e:
        targets.validate_target(host, 80)
    assert e.value.code == "target_not_allowed"
    with pytest.raises(InputError):
        targets.check_allowed(Target(host, 80), None)


@pytest.mark.parametrize("host", ["169.253.255.255", "169.255.0.1", "fec0::1", "::ffff:127.0.0.1",
                                  "10.0.0.1", "metadata.google.internal.example.com", "metadata2"])
def test_neighbours_of_refused_are_fine(host):
    assert targets.validate_target(host, 80).port == 80


@pytest.mark.parametrize("env, expected", [
    (None, None),
    ("", None),
    (" , ", None),
    ("Peer.Example.com", ["peer.example.com"]),
    ("peer.example.com:8443, *.Corp.example", ["peer.example.com:8443", "*.corp.example"]),
    ("127.0.0.1:443,::1,[::1]:8443", ["127.0.0.1:443", "[::1]", "[::1]:8443"]),
])
def test_parse_allowed(env, expected):
    assert targets.parse_allowed(env) == expected


@pytest.mark.parametrize("env", ["example.com:0", "example.com:http", "bad host", "*.", "[::1]:99999"])
def test_parse_allowed_refuses_bad_patterns(env):
    with pytest.raises(ValueError):
        targets.parse_allowed(env)


ALLOWED = targets.parse_allowed("peer.example.com:8443, api.example.com, *.corp.example, 127.0.0.1:9000, [::1]")


@pytest.mark.parametrize("host, port, ok", [
    ("peer.example.com", 8443, True),
    ("PEER.example.com", 8443, True),
    ("peer.example.com", 443, False),       # port pinned
    ("api.example.com", 1, True),           # any port
    ("other.example.com", 443, False),
    ("a.corp.example", 443, True),
    ("a.b.corp.example", 443, True),        # wildcard: any depth below
    ("corp.example", 443, False),           # ... but not the name itself
    ("evilcorp.example", 443, False),
    ("127.0.0.1", 9000, True),
    ("127.0.0.1", 9001, False),
    ("::1", 5, True),
])
def test_check_allowed(host, port, ok):
    target = targets.validate_target(host, port)
    if ok:
        assert targets.check_allowed(target, ALLOWED) == target
    else:
        with pytest.raises(InputError) as e:
            targets.check_allowed(target, ALLOWED)
        assert e.value.code == "target_not_allowed"


def test_check_allowed_accepts_the_raw_env_value():
    assert targets.check_allowed(Target("a.corp.example", 1), "*.corp.example")
    with pytest.raises(InputError):
        targets.check_allowed(Target("b.example", 1), "*.corp.example")


def test_sni_defaults_to_host():
    assert Target("127.0.0.1", 443).sni == "127.0.0.1"
    assert Target("127.0.0.1", 443, "localhost").sni == "localhost"
    assert str(Target("::1", 8443)) == "[::1]:8443"


def test_resolve_literal_and_name():
    infos = targets.resolve(Target("127.0.0.1", 8443), timeout=5)
    assert infos[0][4][:2] == ("127.0.0.1", 8443)
    assert all(info[1] == socket.SOCK_STREAM for info in infos)
    assert {info[4][0] for info in targets.resolve(Target("localhost", 1), timeout=5)} <= {"127.0.0.1", "::1"}


def test_resolve_unresolvable_is_dns_failure():
    with pytest.raises(RemoteError) as e:
        targets.resolve(Target("nonexistent.invalid", 443), timeout=5)
    assert e.value.code == "dns_failure"


def test_resolve_refuses_link_local_answers():
    # A literal stands in for a DNS answer: resolve() checks every address it returns.
    with pytest.raises(InputError) as e:
        targets.resolve(Target("169.254.169.254", 80), timeout=5)
    assert e.value.code == "target_not_allowed"
