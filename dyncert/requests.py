"""requests adapter presenting a ClientIdentity (or the current one from a provider) on every request.

    session = requests.Session()
    session.mount("https://partner.example/", ClientCertAdapter(lambda: load_identity(), hosts=["partner.example"]))

requests picks the adapter whose mount prefix starts the URL: end the prefix with '/', or
"https://partner.example" also serves https://partner.example.evil.example/. hosts= refuses
every other host whatever the mount or a redirect says.

Each request asks the provider for the identity, takes the context presenting it from a
content-keyed cache, and uses the urllib3 pool of that context: a rotated certificate is
used on the next request, and a pooled connection only ever serves the identity it was
opened with (urllib3 keys pools by their ssl_context).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

import requests
import requests.adapters
import requests.exceptions
import urllib3.util
from requests.models import PreparedRequest, Response
from urllib3.connectionpool import HTTPConnectionPool

from ._adapt import CaCerts, HostList, Hosts, Identities, IdentitySource, TlsVersion, attach_code, dyncert_error
from .errors import InputError

__all__ = ["ClientCertAdapter", "dyncert_error"]

_URLLIB3_ALPN = ["http/1.1"]  # what urllib3 sets on every connection (urllib3.util.ssl_.ALPN_PROTOCOLS)
# requests turns these into `verify=<path>` when the session trusts the environment: not a caller's choice.
_ENV_BUNDLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _refuse_overrides(verify: Any, cert: Any) -> None:
    """Refuse request-level settings that would replace the identity or weaken verification."""
    if cert is not None:
        raise InputError("invalid_request", "This session presents a dyncert identity: a request-level "
                         "cert= would replace it. Mount another adapter for another identity.")
    if verify is True or verify is None:
        return
    if isinstance(verify, str) and verify in {os.environ.get(name) for name in _ENV_BUNDLES}:
        return  # the adapter's ca_certs decide; an environment default does not widen them
    raise InputError("invalid_request", f"This session verifies peers with dyncert's settings: verify={verify!r} "
                     "would change that. Give the trusted CA certificates to the adapter (ca_certs=).")


class ClientCertAdapter(requests.adapters.HTTPAdapter):
    """HTTPAdapter for mutual TLS: CERT_REQUIRED, host name checked, TLS 1.2+, the client certificate from memory.

    identity: a ClientIdentity, or a zero-argument function returning the current one (asked per request).
    ca_certs: PEM text or a CA file/directory path trusted for the peer (default: dyncert's default trust).
    tls_version: None/'TLS' (1.2 or newer), 'TLSv1_2' or 'TLSv1_3'.
    hosts: the hosts the certificate is presented to ('host', 'host:port', '*.example.com'); a request to
        any other (a redirect elsewhere, a URL the mount prefix matches by accident) is refused,
        InputError target_not_allowed, before connecting. None (the default) presents it to any host.
    Other keyword arguments go to HTTPAdapter (pool_connections, pool_maxsize, max_retries, pool_block).
    """

    def __init__(self, identity: IdentitySource, *, ca_certs: CaCerts = None, tls_version: TlsVersion = None,
                 hosts: Hosts = None, **kwargs: Any) -> None:
        self._hosts = HostList(hosts)
        self._identities = Identities(identity, ca_certs, tls_version, alpn=_URLLIB3_ALPN)
        super().__init__(**kwargs)

    def get_connection_with_tls_context(self, request: PreparedRequest, verify: bool | str,
                                        proxies: dict[str, str] | None = None,
                                        cert: str | tuple[str, str] | None = None) -> HTTPConnectionPool:
        """The pool for this request's host under the current identity's context (urllib3 keys pools by it).

        requests' own version, but its ValueErrors (our InputErrors) would come out as InvalidURL.
        """
        _refuse_overrides(verify, cert)
        try:
            host_params, _ = self.build_connection_pool_key_attributes(request, True, None)
        except ValueError as e:
            raise requests.exceptions.InvalidURL(e, request=request) from e
        if host_params["scheme"] != "https":
            raise InputError("invalid_request", f"Expected an https:// URL for a client certificate, "
                             f"found {host_params['scheme']}://.")
        self._hosts.check(host_params["scheme"], host_params["host"], host_params["port"])
        _, context = self._identities.context()
        # urllib3 sets cert_reqs on the context for each connection: keep it CERT_REQUIRED.
        pool_kwargs = {"ssl_context": context, "cert_reqs": "CERT_REQUIRED"}
        proxy = requests.utils.select_proxy(request.url or "", proxies)
        if proxy:
            proxy = requests.utils.prepend_scheme_if_needed(proxy, "http")
            if not urllib3.util.parse_url(proxy).host:
                raise requests.exceptions.InvalidProxyURL("Please check proxy URL. It is malformed "
                                                          "and could be missing the host.")
            manager = self.proxy_manager_for(proxy)
            pool: HTTPConnectionPool = manager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
        else:
            pool = self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
        return pool

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: str | tuple[str, str] | None) -> None:
        """Trust and certificate come from the context alone: requests would add certifi's bundle to it."""
        _refuse_overrides(verify, cert)
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = conn.ca_cert_dir = None
        conn.cert_file = conn.key_file = None

    def send(self, request: PreparedRequest, stream: bool = False,
             timeout: float | tuple[float | None, float | None] | None = None,
             verify: bool | str = True, cert: str | tuple[str, str] | None = None,
             proxies: dict[str, str] | None = None) -> Response:
        """HTTPAdapter.send; a connection failure keeps its requests type, dyncert's code in its cause."""
        try:
            return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                                proxies=proxies)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            url = urllib.parse.urlsplit(request.url or "")
            attach_code(e, url.hostname or "", url.port or 443)
            raise
