"""Issue 20 item 9: IPv4 inside IPv6 (SIIT, local-use NAT64, Teredo), and fetch's internal addresses."""

import ipaddress
import json

import pytest
import webtest

import main
from dyncert import targets
from dyncert.errors import InputError
from dyncert.targets import Target


def teredo(server, client):
    """A Teredo address (2001::/32) for `server` and the obfuscated (bit-inverted) `client` IPv4."""
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | \
        (int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)
    return str(ipaddress.IPv6Address(value))


@pytest.mark.parametrize("host", [
    "::ffff:0:a9fe:a9fe",               # SIIT IPv4-translated (::ffff:0:0:0/96) 169.254.169.254
    "64:ff9b:1::a9fe:a9fe",             # local-use NAT64 (RFC 8215) with a /96 layout
    "64:ff9b:1:a9fe:a9:fe00::",         # ... with RFC 6052's /48 layout (octets around the u-byte)
    teredo("192.0.2.1", "169.254.169.254"),  # Teredo: the client is the metadata server
    teredo("169.254.169.254", "192.0.2.1"),  # ... or the server is
])
def test_ipv4_embedded_in_ipv6_is_seen(host):
    with pytest.raises(InputError) as e:
        targets.validate_target(host, 80)
    assert e.value.code == "target_not_allowed"
    with pytest.raises(InputError):
        targets.resolve(Target(host, 80), timeout=5)


@pytest.mark.parametrize("host", [
    "::ffff:0:c000:201",                 # SIIT of 192.0.2.1: a documentation address, not link-local
    "64:ff9b:1::c000:201",
    teredo("192.0.2.1", "198.51.100.7"),
    "2001:db8::a9fe:a9fe",               # documentation prefix: carries no IPv4 address
])
def test_the_same_layouts_with_an_ordinary_address_pass(host):
    assert targets.validate_target(host, 80).port == 80


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "fd00::1",
                                  "0.0.0.0", "::", "::ffff:127.0.0.1", "::ffff:0:7f00:1", "64:ff9b::a00:1",
                                  "2002:7f00:1::1", teredo("192.0.2.1", "10.0.0.1")])
def test_internal_addresses_are_recognised(host):
    assert targets.internal_address(host)


@pytest.mark.parametrize("host", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_are_not_internal(host):
    assert not targets.internal_address(host)


def test_a_public_only_target_refuses_internal_answers_at_resolution():
    """The check runs on the addresses the call connects to: a name cannot rebind between check and connect."""
    with pytest.raises(InputError) as e:
        targets.resolve(Target("localhost", 443, public_only=True), timeout=5)
    assert e.value.code == "target_not_allowed" and "ALLOWED_TARGETS" in e.value.message
    assert targets.resolve(Target("localhost", 443), timeout=5)  # the twin: stored identities may be internal


def fetch(settings, url, **changes):
    import dataclasses
    app = main.create_app(dataclasses.replace(settings, **changes))
    client = webtest.TestApp(app, extra_environ={"HTTP_AUTHORIZATION": f"Bearer {settings.admin_token}"})
    return client.post("/api/v1/fetch", json.dumps({"url": url}), content_type="application/json", status="*")


@pytest.mark.parametrize("url", ["https://127.0.0.1:1/", "https://[::1]:1/", "https://0.0.0.0:1/",
                                 "https://[::]:1/", "https://10.0.0.1:1/", "https://192.168.1.1:1/",
                                 "https://localhost:1/", "https://[::ffff:127.0.0.1]:1/"])
def test_fetch_refuses_internal_addresses(datastore, settings, url):
    response = fetch(settings, url)
    assert response.status_int == 400, response.text
    assert response.json["error"]["code"] == "target_not_allowed"
    assert "ALLOWED_TARGETS" in response.json["error"]["message"]


@pytest.mark.parametrize("url, allowed", [("https://127.0.0.1:1/", "127.0.0.1"),
                                          ("https://localhost:1/", "localhost:1"),
                                          ("https://[::1]:1/", "[::1]")])
def test_fetch_reaches_internal_addresses_allowed_targets_names(datastore, settings, url, allowed):
    """The twin: named in ALLOWED_TARGETS, the address is tried (nothing listens on port 1: refused)."""
    response = fetch(settings, url, allowed_targets=allowed)
    assert response.status_int == 502, response.text
    assert response.json["error"]["code"] == "connection_refused"
