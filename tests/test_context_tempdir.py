"""The sealed temp-file tier keeps one private 0700 directory per process, made once (issue 12, performance)."""

import os
import stat
import tempfile

import pytest
import trustme

from dyncert import context
from dyncert.identity import ClientIdentity

pytestmark = pytest.mark.interp


@pytest.fixture(scope="module")
def identity():
    leaf = trustme.CA().issue_cert("tempdir@example.com", common_name="tempdir")
    return ClientIdentity.from_pem(b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes())


@pytest.fixture
def paths_seen(monkeypatch, tmp_path):
    """Force the temp-file tier under a private temp dir; record each path OpenSSL is handed."""
    monkeypatch.setattr(context, "MEMFD_ENABLED", False)
    monkeypatch.setattr(context, "PIPE_ENABLED", False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen, real = [], context._load_chain

    def spy(ctx, path, password=None):
        st = os.lstat(os.path.dirname(path))
        seen.append((path, stat.S_IMODE(st.st_mode), st.st_uid, stat.S_ISDIR(st.st_mode)))
        return real(ctx, path, password)
    monkeypatch.setattr(context, "_load_chain", spy)
    return seen


def files_under(top):
    return [os.path.join(root, name) for root, _, names in os.walk(top) for name in names]


def test_builds_share_one_private_directory(identity, paths_seen, tmp_path):
    for _ in range(3):
        context.client_context(identity)
    directories = {os.path.dirname(path) for path, *_ in paths_seen}
    assert len(directories) == 1 and len({path for path, *_ in paths_seen}) == 3  # one dir, a fresh file each time
    (directory,) = directories
    assert os.path.dirname(directory) == str(tmp_path) and str(os.getpid()) in os.path.basename(directory)
    assert all(mode == 0o700 and uid == os.geteuid() and is_dir for _, mode, uid, is_dir in paths_seen)
    assert files_under(tmp_path) == []  # every sealed file unlinked at once; only the empty directory stays


def test_a_vanished_directory_is_made_again(identity, paths_seen):
    context.client_context(identity)
    first = os.path.dirname(paths_seen[-1][0])
    os.rmdir(first)
    context.client_context(identity)
    second = os.path.dirname(paths_seen[-1][0])
    assert os.path.isdir(second) and paths_seen[-1][1] == 0o700


@pytest.mark.parametrize("tamper", ["chmod", "symlink"])
def test_a_tampered_directory_is_not_used(identity, paths_seen, tmp_path, tamper):
    # Attack: the directory loosened or swapped for a link to elsewhere; the twin is the test above.
    context.client_context(identity)
    first = os.path.dirname(paths_seen[-1][0])
    if tamper == "chmod":
        os.chmod(first, 0o755)
    else:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        os.rmdir(first)
        os.symlink(elsewhere, first)
    context.client_context(identity)
    path, mode, _, is_dir = paths_seen[-1]
    assert os.path.dirname(path) != first and mode == 0o700 and is_dir
    assert files_under(tmp_path) == []


def test_a_changed_temp_dir_gets_its_own_directory(identity, paths_seen, tmp_path, monkeypatch):
    context.client_context(identity)
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(other))
    context.client_context(identity)
    assert os.path.dirname(os.path.dirname(paths_seen[-1][0])) == str(other)


# The child only builds one context and exits; the threads it does not inherit hold nothing it needs.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_makes_its_own_directory(identity, paths_seen):
    context.client_context(identity)
    parent_dir = os.path.dirname(paths_seen[-1][0])
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: build once, report the directory, exit without pytest's teardown
        try:
            context.client_context(identity)
            os.write(write_end, os.path.dirname(paths_seen[-1][0]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child_dir = pipe.read().decode()
    os.waitpid(pid, 0)
    assert child_dir and child_dir != parent_dir and str(pid) in os.path.basename(child_dir)
    context.client_context(identity)  # the parent keeps its own
    assert os.path.dirname(paths_seen[-1][0]) == parent_dir
