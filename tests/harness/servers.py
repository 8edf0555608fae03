"""Real TLS servers partners run, each requiring a client certificate and reporting which one it saw; each defined once.

apache2, haproxy and stunnel4 from Debian; Node.js (`https`, i.e. tls.Server with requestCert and
rejectUnauthorized) and Java (JSSE, a single-file source run by `java File.java`) where present.
nginx comes from tests/harness/nginx.py, openssl s_server from tests/harness/peers.py. Each server listens on
127.0.0.1, presents `server` (a tests.harness.pki.Credentials with an EC key) and trusts client certificates
under `client_ca_pem` (tests.harness.process.ServerProcess).

What each reports (the body, or a header, of a GET /):
  apache2  X-Client-Sha1: sha1 of SSL_CLIENT_CERT (the leaf's PEM text, as mod_ssl writes it)
  haproxy  body: ssl_c_sha1 as hex (sha1 of the leaf DER)
  node     body: sha256 of the leaf DER (getPeerCertificate().fingerprint256)
  java     body: sha256 of the leaf DER (SSLSession.getPeerCertificates()[0])
  stunnel  nothing it could pass on: a line echo (or a plain HTTP backend) behind it proves the tunnel,
           its log the subject.
"""

import http.server
import os
import shutil
import socket
import threading

from cryptography.hazmat.primitives import serialization

from .ports import free_port
from .process import START_TIMEOUT, ServerProcess  # noqa: F401 - START_TIMEOUT: tests quote it

APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel") or "/usr/bin/stunnel4"
NODE = shutil.which("node")
JAVA = shutil.which("java")


APACHE_CONF = """
ServerRoot "{dir}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
DefaultRuntimeDir {dir}
Mutex file:{dir} default
ErrorLog {dir}/server.log
LogLevel warn
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule headers_module {modules}/mod_headers.so
LoadModule dir_module {modules}/mod_dir.so
LoadModule socache_shmcb_module {modules}/mod_socache_shmcb.so
LoadModule ssl_module {modules}/mod_ssl.so
StartServers 1
ServerLimit 1
ThreadsPerChild 16
DocumentRoot {dir}/htdocs
DirectoryIndex index.html
<Directory />
  Require all granted
</Directory>
SSLSessionCache shmcb:{dir}/ssl_scache(512000)
SSLEngine on
SSLCertificateFile {cert}
SSLCertificateKeyFile {key}
SSLCACertificateFile {client_ca}
SSLVerifyClient require
# Apache's default depth (1) refuses a client chain with an intermediate (internal_error alert).
SSLVerifyDepth {verify_depth}
{protocol}
Header always set X-Client-Sha1 "expr=%{{sha1:%{{SSL_CLIENT_CERT}}}}"
Header always set X-Client-Serial "%{{SSL_CLIENT_M_SERIAL}}s"
"""


class Apache(ServerProcess):
    """Apache httpd with mod_ssl, `SSLVerifyClient require`, the given SSLVerifyDepth and TLS version (None: both)."""

    name = "apache2"
    binary = APACHE

    def __init__(self, server, client_ca_pem, verify_depth=5, tls=None):
        super().__init__(server, client_ca_pem)
        self.verify_depth, self.tls = verify_depth, tls

    def command(self):
        self.port = free_port()
        htdocs = os.path.join(self.dir, "htdocs")
        os.mkdir(htdocs)
        with open(os.path.join(htdocs, "index.html"), "w") as f:
            f.write("ok\n")
        # As root, Apache's workers drop to an unprivileged user: let it read the document root.
        user = ""
        if os.geteuid() == 0:
            user = "User nobody\nGroup nogroup"
            os.chmod(self.dir, 0o711)
            os.chmod(htdocs, 0o755)
            os.chmod(os.path.join(htdocs, "index.html"), 0o644)
        conf = self.write("httpd.conf", APACHE_CONF.format(dir=self.dir, port=self.port, modules=APACHE_MODULES,
                                                           cert=self.cert, key=self.key, client_ca=self.client_ca,
                                                           user=user, verify_depth=self.verify_depth,
                                                           protocol=f"SSLProtocol -all +TLSv{self.tls}"
                                                           if self.tls else ""), 0o644)
        return [APACHE, "-f", conf, "-DFOREGROUND"]


HAPROXY_CONF = """
global
  maxconn 64
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend mtls
  bind 127.0.0.1:{port} ssl crt {combined} ca-file {client_ca} verify required
  http-request return status 200 content-type text/plain lf-string "%[ssl_c_sha1,hex]"
"""


class HAProxy(ServerProcess):
    name = "haproxy"
    binary = HAPROXY

    def command(self):
        self.port = free_port()
        with open(self.cert, "rb") as c, open(self.key, "rb") as k:
            combined = c.read() + k.read()
        path = os.path.join(self.dir, "combined.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(combined)
        conf = self.write("haproxy.cfg", HAPROXY_CONF.format(port=self.port, combined=path,
                                                             client_ca=self.client_ca))
        return [HAPROXY, "-db", "-f", conf]


STUNNEL_CONF = """
foreground = yes
pid =
debug = 5
output = {dir}/server.log
[mtls]
accept = 127.0.0.1:{port}
connect = 127.0.0.1:{backend}
cert = {cert}
key = {key}
CAfile = {client_ca}
verifyChain = yes
requireCert = yes
{versions}
"""


class LineEcho:
    """A plain TCP line echo on loopback (the backend behind stunnel): it cannot see the client certificate."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn):
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while not data.endswith(b"\n") and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                conn.sendall(data)
            except OSError:
                pass

    def close(self):
        self.stopped = True
        self.listener.close()


class PlainHTTP:
    """A plain HTTP backend on loopback (behind stunnel): answers 200 'plain backend saw <path>'."""

    class _Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = f"plain backend saw {self.path}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Stunnel(ServerProcess):
    """stunnel4 (verifyChain, requireCert) in front of a backend in this process: `backend` 'echo' or 'http'."""

    name = "stunnel4"
    binary = STUNNEL

    def __init__(self, server, client_ca_pem, tls=None, backend="echo"):
        super().__init__(server, client_ca_pem)
        self.tls, self.backend_kind, self.backend = tls, backend, None

    def command(self):
        self.port = free_port()
        self.backend = {"echo": LineEcho, "http": PlainHTTP}[self.backend_kind]()
        versions = f"sslVersionMin = TLSv{self.tls}\nsslVersionMax = TLSv{self.tls}" if self.tls else ""
        conf = self.write("stunnel.conf", STUNNEL_CONF.format(dir=self.dir, port=self.port, backend=self.backend.port,
                                                             cert=self.cert, key=self.key, client_ca=self.client_ca,
                                                             versions=versions))
        return [STUNNEL, conf]

    def stop(self):
        super().stop()
        if self.backend is not None:
            self.backend.close()


NODE_SERVER = r"""
const https = require('https');
const fs = require('fs');
const [key, cert, ca] = process.argv.slice(2).map((f) => fs.readFileSync(f));
// https.Server is a tls.Server: requestCert + rejectUnauthorized require a client certificate under `ca`.
const server = https.createServer({key, cert, ca, requestCert: true, rejectUnauthorized: true}, (req, res) => {
  const seen = req.socket.getPeerCertificate();
  res.writeHead(200, {'content-type': 'text/plain'});
  res.end(seen.fingerprint256.replace(/:/g, '').toLowerCase());
});
server.on('tlsClientError', (err) => console.log('tlsClientError ' + err.code));
server.listen(0, '127.0.0.1', () => console.log('LISTEN ' + server.address().port));
"""


class Node(ServerProcess):
    name = "node"
    binary = NODE

    def command(self):
        script = self.write("server.js", NODE_SERVER, 0o644)
        return [NODE, script, self.key, self.cert, self.client_ca]


JAVA_SERVER = r"""
import java.io.*;
import java.net.InetAddress;
import java.nio.file.*;
import java.security.*;
import java.security.cert.*;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.*;
import javax.net.ssl.*;

/** JSSE server requiring a client certificate; answers any request with the sha256 of the client's leaf. */
public class WhoAmI {
    public static void main(String[] args) throws Exception {
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        Collection<? extends java.security.cert.Certificate> chain;
        try (InputStream in = new FileInputStream(args[0])) { chain = cf.generateCertificates(in); }
        PrivateKey key = KeyFactory.getInstance("EC").generatePrivate(
            new PKCS8EncodedKeySpec(Files.readAllBytes(Path.of(args[1]))));
        KeyStore keys = KeyStore.getInstance("PKCS12");
        keys.load(null, null);
        keys.setKeyEntry("server", key, new char[0], chain.toArray(new java.security.cert.Certificate[0]));
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        try (InputStream in = new FileInputStream(args[2])) {
            int i = 0;
            for (java.security.cert.Certificate c : cf.generateCertificates(in)) trust.setCertificateEntry("ca" + i++, c);
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, new char[0]);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        SSLServerSocket listener = (SSLServerSocket) ctx.getServerSocketFactory()
            .createServerSocket(0, 64, InetAddress.getByName("127.0.0.1"));
        listener.setNeedClientAuth(true);
        System.out.println("LISTEN " + listener.getLocalPort());
        System.out.flush();
        while (true) {
            SSLSocket s = (SSLSocket) listener.accept();
            new Thread(() -> serve(s)).start();
        }
    }

    static void serve(SSLSocket s) {
        try (s) {
            s.setSoTimeout(10000);
            s.startHandshake();
            byte[] der = s.getSession().getPeerCertificates()[0].getEncoded();
            String seen = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(der));
            BufferedReader in = new BufferedReader(new InputStreamReader(s.getInputStream(), "ISO-8859-1"));
            String line;
            while ((line = in.readLine()) != null && !line.isEmpty()) { }
            OutputStream out = s.getOutputStream();
            out.write(("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + seen.length()
                       + "\r\nConnection: close\r\n\r\n" + seen).getBytes("ISO-8859-1"));
            out.flush();
        } catch (Exception e) {
            System.out.println("connection: " + e);
        }
    }
}
"""


class Java(ServerProcess):
    name = "java"
    binary = JAVA

    def command(self):
        source = self.write("WhoAmI.java", JAVA_SERVER, 0o644)
        with open(self.key, "rb") as f:  # Java reads PKCS#8 DER, not trustme's PEM
            key = serialization.load_pem_private_key(f.read(), None)
        der_path = os.path.join(self.dir, "server-key.der")
        fd = os.open(der_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        # Small heap and no JIT tiers beyond C1: it starts sooner and serves a few dozen requests.
        return [JAVA, "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-Xmx128m", source, self.cert, der_path,
                self.client_ca]


SERVERS = {cls.name: cls for cls in (Apache, HAProxy, Stunnel, Node, Java)}
