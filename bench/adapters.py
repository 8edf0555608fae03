"""requests and httpx against nginx: dyncert's adapters vs the usual workarounds (temp files per call, static files)."""

import os
import ssl
import tempfile

import httpx
import requests

from dyncert.httpx import ClientCertTransport
from dyncert.requests import ClientCertAdapter

from . import timing

ROWS = (
    ("requests_adapter", "requests + ClientCertAdapter(provider), keep-alive"),
    ("requests_static", "requests, cert=(files on disk), session keep-alive"),
    ("requests_tempfiles", "requests.get, cert=(temp files written per call)"),
    ("httpx_adapter", "httpx + ClientCertTransport(provider), keep-alive"),
    ("httpx_static", "httpx, context from files on disk, keep-alive"),
    ("httpx_tempfiles", "httpx.get, context from temp files per call"),
)


def _temp_files(pki):
    """Chain and key written to fresh temp files, as code without dyncert does per call; removed by the caller."""
    directory = tempfile.mkdtemp(prefix="bench-cert-")
    cert, key = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
    with open(cert, "wb") as f:
        f.write(pki.client_chain_pem)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pki.client_key_pem)
    return directory, cert, key


def _cleanup(directory):
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)


class Adapters:
    """The six paths, each a GET / to the same nginx, checked for a 200."""

    def __init__(self, pki, port):
        self.pki = pki
        self.url = f"https://localhost:{port}/"
        identity = pki.identity()
        self.ca = pki.path("ca.pem")
        self.requests_adapter = requests.Session()
        self.requests_adapter.mount("https://", ClientCertAdapter(lambda: identity, ca_certs=self.ca))
        self.requests_static = requests.Session()
        self.requests_static.cert = (pki.path("client.pem"), pki.path("client-key.pem"))
        self.httpx_adapter = httpx.Client(transport=ClientCertTransport(lambda: identity, ca_certs=self.ca))
        static = ssl.create_default_context(cafile=self.ca)
        static.load_cert_chain(pki.path("client.pem"), pki.path("client-key.pem"))
        self.httpx_static = httpx.Client(verify=static)

    def close(self):
        for client in (self.requests_adapter, self.requests_static, self.httpx_adapter, self.httpx_static):
            client.close()

    @staticmethod
    def _ok(response):
        if response.status_code != 200:
            raise RuntimeError(f"nginx answered {response.status_code}: {response.text[:200]}")

    def run_requests_adapter(self):
        self._ok(self.requests_adapter.get(self.url))

    def run_requests_static(self):
        self._ok(self.requests_static.get(self.url, verify=self.ca))  # REQUESTS_CA_BUNDLE beats session.verify

    def run_requests_tempfiles(self):
        directory, cert, key = _temp_files(self.pki)
        try:
            self._ok(requests.get(self.url, cert=(cert, key), verify=self.ca))
        finally:
            _cleanup(directory)

    def run_httpx_adapter(self):
        self._ok(self.httpx_adapter.get(self.url))

    def run_httpx_static(self):
        self._ok(self.httpx_static.get(self.url))

    def run_httpx_tempfiles(self):
        directory, cert, key = _temp_files(self.pki)
        try:
            ctx = ssl.create_default_context(cafile=self.ca)
            ctx.load_cert_chain(cert, key)
            self._ok(httpx.get(self.url, verify=ctx))
        finally:
            _cleanup(directory)


def run(pki, port, args, log):
    """Alternated rounds of the six paths; samples and summaries like the other groups."""
    paths = Adapters(pki, port)
    try:
        ops = {name: timing.timed(getattr(paths, "run_" + name)) for name, _ in ROWS}
        samples = timing.alternate(ops, args.rounds, args.duration, progress=log)
    finally:
        paths.close()
    return {"samples": samples, "summary": {name: timing.summarize(s) for name, s in samples.items()}}
