"""ALLOWED_TARGETS ports: ASCII digits only (str.isdigit() also takes '²' and '١')."""

import pytest

from dyncert import targets


@pytest.mark.parametrize("pattern", ["peer.example.com:\u0661", "peer.example.com:\u00b2", "[::1]:\u0664\u0664\u0663",
                                     "peer.example.com:\uff18\uff14\uff14\uff13"])
def test_non_ascii_digit_ports_are_refused_with_the_allowed_targets_message(pattern):
    with pytest.raises(ValueError) as caught:
        targets.parse_allowed(pattern)
    assert str(caught.value).startswith("ALLOWED_TARGETS: expected 'host' or 'host:port'")


@pytest.mark.parametrize("pattern, expected", [("peer.example.com:1", "peer.example.com:1"),
                                               ("[::1]:443", "[::1]:443"),
                                               ("peer.example.com:65535", "peer.example.com:65535")])
def test_ascii_digit_ports_still_parse(pattern, expected):
    assert targets.parse_allowed(pattern) == [expected]
