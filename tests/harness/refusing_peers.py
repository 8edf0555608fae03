"""Real servers configured to refuse a client certificate at the HTTP layer, after a completed handshake.

nginx from tests/harness/nginx.py, apache2 and haproxy from tests/harness/servers.py, each with its config
rewritten (see tests/test_http_refusals.py for what each one answers).
"""

import contextlib

import pytest

from tests.harness import nginx
from tests.harness import servers


@contextlib.contextmanager
def nginx_peer(server, client_ca_pem, verify="on", location="", inside=""):
    """nginx (tests/harness/nginx.py) with `ssl_verify_client verify`, extra server-level `location` blocks, and
    `inside` at the top of `location /`; /plain-400 and /plain-403 answer with nothing about certificates."""
    if not nginx.available():
        pytest.skip(f"nginx: not installed at {nginx.NGINX}")
    def rewrite(text):
        text = text.replace("ssl_verify_client on;", f"ssl_verify_client {verify};")
        return text.replace("    location / {", location + "    location = /plain-400 { return 400 'bad input'; }\n"
                            "    location = /plain-403 { return 403 'not for you'; }\n"
                            "    location / {" + inside)

    peer = nginx.NginxPeer(server, client_ca_pem, rewrite=rewrite)
    with peer:
        yield peer


class _Rewritten:
    """An interop server whose written config gets `replacements` (the base config otherwise)."""

    replacements = ()

    def command(self):
        cmd = super().command()
        path = cmd[cmd.index("-f") + 1]
        with open(path) as f:
            text = f.read()
        for old, new in self.replacements:
            assert old in text, old
            text = text.replace(old, new)
        with open(path, "w") as f:
            f.write(text)
        return cmd


def started(cls, server_creds, client_ca_pem):
    """A started, listening `cls` server (skips when its binary is not installed)."""
    reason = cls.available()
    if reason:
        pytest.skip(reason)
    server = cls(server_creds, client_ca_pem).start()
    try:
        return server.ready()
    except BaseException:
        server.stop()
        raise


@contextlib.contextmanager
def running(cls, server_creds, client_ca_pem):
    """`cls` running for the block."""
    server = started(cls, server_creds, client_ca_pem)
    try:
        yield server
    finally:
        server.stop()


class ApachePerLocation(_Rewritten, servers.Apache):
    """SSLVerifyClient require for a <Location> only: TLS 1.3 asks for the certificate after the handshake."""
    replacements = (("SSLVerifyClient require", "SSLVerifyClient none\n<Location />\n  SSLVerifyClient require\n"
                                                "</Location>"),)


class ApacheOptionalNoCa(_Rewritten, servers.Apache):
    """optional_no_ca and a Require on the verification: Apache's own 403 page, the same as for any other rule."""
    replacements = (("SSLVerifyClient require", "SSLVerifyClient optional_no_ca\n<Location />\n"
                                                "  Require expr %{SSL_CLIENT_VERIFY} == 'SUCCESS'\n</Location>"),)


class ApacheOptionalSaysSo(_Rewritten, servers.Apache):
    """The same, told to say why (README: how to make Apache's refusal recognisable)."""
    replacements = (("SSLVerifyClient require", "SSLVerifyClient optional_no_ca\n<Location />\n"
                                                "  <If \"%{SSL_CLIENT_VERIFY} != 'SUCCESS'\">\n"
                                                "    ErrorDocument 403 \"client certificate refused\"\n"
                                                "    Require all denied\n  </If>\n</Location>"),)


class ApacheOptional(_Rewritten, servers.Apache):
    """SSLVerifyClient optional: a certificate that is presented must verify (in the handshake)."""
    replacements = (("SSLVerifyClient require", "SSLVerifyClient optional\n<Location />\n"
                                                "  Require expr %{SSL_CLIENT_VERIFY} == 'SUCCESS'\n</Location>"),)


HAPROXY_ANSWER = "  http-request return status 200"


class HAProxyOptional(_Rewritten, servers.HAProxy):
    """verify optional + deny unless verified: a presented certificate must still verify (in the handshake)."""
    replacements = (("verify required", "verify optional"),
                    (HAPROXY_ANSWER, "  http-request deny if !{ ssl_c_verify 0 }\n" + HAPROXY_ANSWER))


class HAProxyIgnoring(_Rewritten, servers.HAProxy):
    """verify optional with the errors ignored: the deny is HAProxy's generic 403, nothing about certificates."""
    replacements = (("verify required", "verify optional crt-ignore-err all ca-ignore-err all"),
                    (HAPROXY_ANSWER, "  http-request deny if !{ ssl_c_used } || !{ ssl_c_verify 0 }\n"
                     + HAPROXY_ANSWER))


class HAProxy495(_Rewritten, servers.HAProxy):
    """The same, answering 495 (README: `deny_status 495` is refused by HAProxy 2.6; `return status 495` works)."""
    replacements = (("verify required", "verify optional crt-ignore-err all ca-ignore-err all"),
                    (HAPROXY_ANSWER, "  http-request return status 495 content-type text/plain string "
                     "\"client certificate refused\" if !{ ssl_c_used } || !{ ssl_c_verify 0 }\n" + HAPROXY_ANSWER))


class HAProxySaysSo(_Rewritten, servers.HAProxy):
    """A deny whose body names the client certificate (HAProxy 2.2+: deny with a string)."""
    replacements = (("verify required", "verify optional crt-ignore-err all ca-ignore-err all"),
                    (HAPROXY_ANSWER, "  http-request deny deny_status 403 content-type text/plain string "
                     "\"client certificate refused\" if !{ ssl_c_used } || !{ ssl_c_verify 0 }\n" + HAPROXY_ANSWER))
