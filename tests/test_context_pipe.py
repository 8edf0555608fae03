"""The pipe tier: chain and key through anonymous pipes read as /proc/self/fd/N, never a file (issue 12, performance)."""

import datetime
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
import threading

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa

from dyncert import context
from dyncert.errors import InputError
from dyncert.identity import ClientIdentity
from tests.harness import interop_pki
from tests.harness.tiers import Server, force_tier, identity_from, talk

UTC = datetime.timezone.utc
TIERS = ("memfd", "pipe", "tempfile")

pytestmark = [pytest.mark.skipif(not context._pipe_works(), reason="pipes do not read back through /proc/self/fd here"),
              pytest.mark.interp]


@pytest.fixture(scope="module")
def client_ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ca():
    return trustme.CA()


@pytest.fixture
def server(server_ca, client_ca):
    s = Server(server_ca, client_ca)
    yield s
    s.close()


@pytest.fixture(scope="module")
def alice(client_ca):
    """EC P-256 through an intermediate: a two-certificate chain."""
    return identity_from(client_ca.create_child_ca().issue_cert("alice@example.com", common_name="alice"))


@pytest.fixture
def pipe_tier(monkeypatch):
    force_tier(monkeypatch, "pipe")


def issue(client_ca, key, names=(), cn="big", validate=True):
    """A client certificate for `key` from the client CA, with `names` as DNS SANs (to make it large)."""
    ca_key = serialization.load_pem_private_key(client_ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(client_ca.cert_pem.bytes())
    now = datetime.datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # signed by the CA's (EC) key
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    return ClientIdentity.from_pem(cert_pem, key_pem) if validate else ClientIdentity(cert_pem, key_pem)


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


class Recording(ssl.SSLContext):
    """An SSLContext noting what each path given to load_cert_chain is at the moment OpenSSL gets it."""

    def load_cert_chain(self, certfile, keyfile=None, password=None):
        self.seen = [(path, os.readlink(path) if path else None) for path in (certfile, keyfile)]
        self.password = password
        return super().load_cert_chain(certfile, keyfile, password)


# --- (a) each path opened once: two pipes, no password, no file ---------------------------

def test_chain_and_key_each_come_through_their_own_pipe(alice, pipe_tier):
    ctx = Recording(ssl.PROTOCOL_TLS_CLIENT)
    assert context.load_identity(ctx, alice) == "pipe"
    (cert_path, cert_target), (key_path, key_target) = ctx.seen
    assert cert_path != key_path and all(p.startswith("/proc/self/fd/") for p in (cert_path, key_path))
    assert cert_target.startswith("pipe:[") and key_target.startswith("pipe:[") and cert_target != key_target
    # No real password: the key is on no file system to seal it against (the callback only stops a prompt).
    assert ctx.password is context._no_password and context._no_password() == b""


def test_a_pipe_is_read_once_so_one_path_for_both_fails(alice):
    # Why two pipes: given a certfile alone, OpenSSL opens it twice (chain, then key) and the second
    # open finds the pipe drained. The twin above loads the same identity through two pipes.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    fd = context._filled_pipe(context._pem_concat(alice.chain_pem, alice.key_pem))
    try:
        with pytest.raises(OSError):
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["ec", "rsa", "ed448"])
def test_every_key_type_loads_through_pipes_and_shakes_hands(client_ca, server, server_ca, kind, pipe_tier):
    key = {"ec": lambda: ec.generate_private_key(ec.SECP384R1()),
           "rsa": lambda: rsa.generate_private_key(65537, 2048),
           "ed448": ed448.Ed448PrivateKey.generate}[kind]()
    identity = issue(client_ca, key, cn=kind)
    ctx = context.client_context(identity, ca_certs=server_ca.cert_pem.bytes())
    assert context.load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), identity) == "pipe"  # no fallthrough
    assert talk(ctx, server.port)[0] == b"hello\n"
    assert server.result() == identity.fingerprint_sha256


def test_an_rsa_pss_key_loads_through_pipes(pipe_tier):
    # OpenSSL's decoder reads RSA-PSS PKCS#8 in one pass: no seek back, so no fallthrough to the temp file.
    directory = interop_pki.workdir()
    try:
        upload = interop_pki.identity("pss-pipe", interop_pki.make_ca("pss pipe root"), "rsa-pss", "pkcs8", directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert context.load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), upload.load()) == "pipe"


def test_an_identity_uploaded_encrypted_loads_through_pipes_without_a_password(client_ca, pipe_tier):
    leaf = client_ca.issue_cert("enc@example.com")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"upload password"))
    identity = ClientIdentity.from_pem(b"".join(p.bytes() for p in leaf.cert_chain_pems), encrypted, b"upload password")
    ctx = Recording(ssl.PROTOCOL_TLS_CLIENT)
    assert context.load_identity(ctx, identity) == "pipe" and ctx.password is context._no_password


PROMPT_CHILD = textwrap.dedent("""
    import os, pty, select, signal, sys, time
    pid, master = pty.fork()  # the loader gets a controlling terminal, as under `make run`
    if pid == 0:
        import trustme
        from cryptography.hazmat.primitives import serialization
        from dyncert import context
        from dyncert.errors import InputError
        from dyncert.identity import ClientIdentity
        leaf = trustme.CA().issue_cert("tty@example.com")
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"secret"))
        forged = ClientIdentity(b"".join(p.bytes() for p in leaf.cert_chain_pems), encrypted)  # not validated
        tier = sys.argv[1]
        context.set_memfd_enabled(tier == "memfd")
        context.set_pipe_enabled(tier in ("memfd", "pipe"))
        try:
            context.client_context(forged)
            print("loaded")
        except InputError as e:
            print("code", e.code)
        os._exit(0)
    out, deadline = b"", time.monotonic() + 60
    while time.monotonic() < deadline and b"pass phrase" not in out.lower():
        if select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    try:
        os.kill(pid, signal.SIGKILL)  # a loader waiting at the prompt would wait forever
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    print(out.decode("utf-8", "replace"))
""")


@pytest.mark.parametrize("tier", TIERS)
def test_an_encrypted_key_never_prompts_on_the_terminal(tier):
    # Attack: an identity that skipped validation carries an encrypted key. Given no password,
    # OpenSSL would ask on the controlling terminal ("Enter PEM pass phrase:") and the thread
    # would wait there for ever. Every tier must refuse it as invalid_key instead.
    if tier == "memfd" and not hasattr(os, "memfd_create"):
        pytest.skip("no os.memfd_create on this interpreter")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", PROMPT_CHILD, tier], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=root), cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pass phrase" not in done.stdout.lower()
    assert "code invalid_key" in done.stdout


# --- (b) chains larger than a pipe's default 64 KiB ---------------------------------------

def test_a_chain_over_64_kib_grows_the_pipe(client_ca, server, server_ca, pipe_tier):
    names = [f"host-{i:05d}.big.example.com" for i in range(2300)]  # ~70 KiB of PEM, under OpenSSL's 100 KiB cap
    identity = issue(client_ca, ec.generate_private_key(ec.SECP256R1()), names)
    assert len(identity.chain_pem) > 65536
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert context.load_identity(ctx, identity) == "pipe"
    ctx = context.client_context(identity, ca_certs=server_ca.cert_pem.bytes())
    assert talk(ctx, server.port)[0] == b"hello\n"
    assert server.result() == identity.fingerprint_sha256


def test_a_chain_beyond_pipe_max_size_falls_back_to_the_sealed_file(alice, pipe_tier, server, server_ca):
    with open("/proc/sys/fs/pipe-max-size") as f:
        limit = int(f.read())
    # Text between PEM blocks is skipped by OpenSSL: the chain stays valid, only larger than any pipe.
    padded = ClientIdentity(alice.chain_pem + b"# padding\n" * (limit // 10 + 1), alice.key_pem)
    before = open_fds()
    assert context.load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), padded) == "tempfile"
    assert open_fds() == before
    ctx = context.client_context(padded, ca_certs=server_ca.cert_pem.bytes())
    assert talk(ctx, server.port)[0] == b"hello\n"
    assert server.result() == alice.fingerprint_sha256


# --- (c) descriptors never leak ----------------------------------------------------------

def test_no_descriptor_leaks_over_many_builds(alice, pipe_tier):
    before = open_fds()
    for _ in range(200):
        assert context.load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), alice) == "pipe"
    assert open_fds() == before


def test_no_descriptor_leaks_on_errors(alice, client_ca, pipe_tier):
    other = identity_from(client_ca.issue_cert("other@example.com"))
    forged = [ClientIdentity(alice.chain_pem, other.key_pem),  # same key type, another key
              ClientIdentity(alice.chain_pem, b"-----BEGIN " + b"PRIVATE KEY-----\nAAAA\n-----END " + b"PRIVATE KEY-----\n")]
    before = open_fds()
    for _ in range(20):
        for identity in forged:
            with pytest.raises(InputError):
                context.client_context(identity)
    assert open_fds() == before


# --- (d) threads -------------------------------------------------------------------------

def test_threads_building_at_once_each_get_their_own_identity(client_ca, server, server_ca, pipe_tier):
    identities = [identity_from(client_ca.issue_cert(f"t{i}@example.com")) for i in range(6)]
    results, errors = {}, []
    before = open_fds()

    def build(i):
        try:
            for _ in range(25):
                results[i] = context.client_context(identities[i], ca_certs=server_ca.cert_pem.bytes())
        except Exception as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=build, args=(i,)) for i in range(len(identities))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and open_fds() == before
    for i, identity in enumerate(identities):  # each context presents its own certificate, no crossed pipes
        assert talk(results[i], server.port)[0] == b"hello\n"
        assert server.result() == identity.fingerprint_sha256


# --- (e) fork ----------------------------------------------------------------------------

def _child_holds_write_end(inode):
    """In a forked child: True if any of its descriptors is the write end of pipe `inode`."""
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            with open(f"/proc/self/fdinfo/{name}") as f:
                flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue
        if target == f"pipe:[{inode}]" and flags & os.O_ACCMODE == os.O_WRONLY:
            return True
    return False


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_fork_during_a_build_never_inherits_a_write_end(alice, pipe_tier, monkeypatch):
    # Attack on the reader: a child holding a copy of the write end would keep OpenSSL's read in the
    # parent from ever seeing EOF. os.fork() waits for the write end to be closed.
    inside, go, forking = threading.Event(), threading.Event(), threading.Event()
    seen, real = {}, context._write_all

    def slow_write(fd, data):
        if "inode" not in seen:
            seen["inode"] = os.fstat(fd).st_ino
            inside.set()
            go.wait(30)
        return real(fd, data)
    monkeypatch.setattr(context, "_write_all", slow_write)
    builder = threading.Thread(target=lambda: context.load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), alice))
    builder.start()
    assert inside.wait(30)
    report_r, report_w = os.pipe()
    child = {}

    def fork():
        forking.set()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(report_w, b"1" if _child_holds_write_end(seen["inode"]) else b"0")
            finally:
                os._exit(0)
        child["pid"] = pid
    forker = threading.Thread(target=fork)
    forker.start()
    assert forking.wait(30)
    go.wait(0.3)  # give the fork every chance to happen mid-write (it must not)
    go.set()
    builder.join(30)
    forker.join(30)
    os.close(report_w)
    with os.fdopen(report_r, "rb") as report:
        held = report.read()
    os.waitpid(child["pid"], 0)
    assert held == b"0"


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_builds_through_pipes(alice, pipe_tier):
    context.load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), alice)
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(report_w, context.load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), alice).encode())
        finally:
            os._exit(0)
    os.close(report_w)
    with os.fdopen(report_r, "rb") as report:
        tier = report.read()
    os.waitpid(pid, 0)
    assert tier == b"pipe"


# --- (f) the same error codes on every tier ---------------------------------------------

@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("case,code", [("same_type_key", "key_mismatch"), ("other_type_key", "key_mismatch"),
                                       ("garbage_key", "invalid_key"), ("garbage_chain", "invalid_key"),
                                       ("weak_rsa", "invalid_certificate")])
def test_errors_keep_their_codes_on_every_tier(alice, client_ca, monkeypatch, tier, case, code):
    if tier == "memfd" and not hasattr(os, "memfd_create"):
        pytest.skip("no os.memfd_create on this interpreter")
    begin, end = b"-----BEGIN ", b"-----END "
    if case == "weak_rsa":
        # Uploads refuse it; unvalidated, OpenSSL refuses it at security level 2.
        forged = issue(client_ca, rsa.generate_private_key(65537, 1024), cn="weak", validate=False)
    else:
        forged = ClientIdentity(
            begin + b"CERTIFICATE-----\nAAAA\n" + end + b"CERTIFICATE-----\n" if case == "garbage_chain"
            else alice.chain_pem,
            {"same_type_key": lambda: identity_from(client_ca.issue_cert("x@example.com")).key_pem,
             "other_type_key": lambda: identity_from(client_ca.issue_cert(
                 "y@example.com", key_type=trustme.KeyType.RSA)).key_pem,
             "garbage_key": lambda: begin + b"PRIVATE KEY-----\nAAAA\n" + end + b"PRIVATE KEY-----\n",
             "garbage_chain": lambda: alice.key_pem}[case]())
    force_tier(monkeypatch, tier)
    with pytest.raises(InputError) as info:
        context.client_context(forged)
    assert info.value.code == code
    assert "Errno" not in info.value.message and "seek" not in info.value.message


# --- (g) chosen by capability ------------------------------------------------------------

def test_tiers_are_chosen_by_capability(alice, monkeypatch):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert context.load_identity(ctx, alice) == ("memfd" if hasattr(os, "memfd_create") else "pipe")
    monkeypatch.delattr(os, "memfd_create", raising=False)  # the Cloud CLI's 3.12
    assert context.load_identity(ctx, alice) == "pipe"
    context.set_pipe_enabled(False)
    try:
        assert not context.pipe_available()
        assert context.load_identity(ctx, alice) == "tempfile"
    finally:
        context.set_pipe_enabled(True)
    assert context.pipe_available()


CHILD = textwrap.dedent("""
    import os, ssl, subprocess, sys, trustme
    subprocess.run(["mount", "-t", "tmpfs", "none", "/proc"], check=True)  # this mount namespace only
    assert not os.path.exists("/proc/self/fd")
    from dyncert import context
    from dyncert.identity import ClientIdentity
    leaf = trustme.CA().issue_cert("noproc@example.com")
    identity = ClientIdentity.from_pem(b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes())
    print(context.pipe_available(), context.load_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), identity))
""")


def test_without_proc_every_build_takes_the_sealed_file():
    # A real process without /proc (a private mount namespace with /proc covered), not a patched probe.
    unshare = shutil.which("unshare")
    if not unshare or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and unshare(1) to hide /proc in a private mount namespace")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    done = subprocess.run([unshare, "--mount", "--propagation", "private", sys.executable, "-c", CHILD],
                          capture_output=True, text=True, env=env, cwd=root, timeout=120)
    if done.returncode and "unshare" in done.stderr:
        pytest.skip(f"unshare refused here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "tempfile"]
