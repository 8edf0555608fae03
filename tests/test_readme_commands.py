"""The README's shell commands, run as written where that is safe (against a test app), the rest listed.

Each indented code block of README.md that holds commands is either run with bash in a sandbox (a
folder with `local/demo-pki` and `local/admin-token`, the app served on a free port, the demo peers
on free ports) or skipped with a stated reason. `make` commands run as `make -n` (what they would do).
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.harness.app import read
from devserver import demo_peer as peer_module
from tests.harness.ports import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# First words of a command line, and what happens to blocks that start with them.
SKIP = {
    "gcloud": "needs a Google Cloud project and credentials (make deploy's own test covers the flow)",
    "SDK=$(gcloud": "starts dev_appserver, minutes long (tests/test_deploy.py runs it as a slow test)",
}
RUN = ("make ", "openssl ", "TOKEN=", "curl ", "printf ", "export ", ".venv/bin/python ")
# Lines left out of a block that is run otherwise.
SKIP_LINES = {
    re.compile(r"^make (test|deploy|preflight)\b.*$", re.M):
        "runs the suite or deploys even as `make -n`: its recipe calls $(MAKE) or gcloud",
}


def code_blocks(text):
    """Indented (4-space) code blocks outside fenced ones, as lists of lines (continuations joined)."""
    blocks, current, fenced = [], [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        indented = re.match(r"^( {4,})(\S.*)$", line)
        if not fenced and indented and (current or not line.lstrip().startswith(("-", "*"))):
            current.append(line)
        else:
            if current:
                blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return [textwrap_dedent(b) for b in blocks]


def textwrap_dedent(lines):
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


def classify(block):
    """('run' | 'skip' | 'text', reason)."""
    first = block.lstrip().splitlines()[0]
    for prefix, reason in SKIP.items():
        if first.startswith(prefix):
            return "skip", reason
    if first.startswith(RUN):
        return "run", ""
    return "text", "output or prose, not a command"


@pytest.fixture(scope="module")
def peers(demo_pki):
    servers = peer_module.serve(demo_pki, free_port(), free_port(), open_port=free_port())
    yield [s.server_address[1] for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def as_run_here(block, url, ports):
    """The block with the test app's URL and ports in place of the defaults; make as a dry run."""
    https_port, echo_port, open_port = ports
    block = block.replace("http://127.0.0.1:8080", url)
    block = re.sub(r"\b8445\b", str(open_port), block)
    block = re.sub(r"^make ", "make -n --no-print-directory -C " + ROOT + " ", block, flags=re.M)
    return block.replace(".venv/bin/python", sys.executable)


def test_every_readme_command_block_runs_or_is_skipped_with_a_reason(served, admin, settings, demo_pki,  # noqa: F811
                                                                     peers, tmp_path, capsys):
    https_port, echo_port, open_port = peers
    for address, port in ((1, https_port), (2, echo_port)):  # what make run seeds
        admin.put_json(f"/api/v1/employees/asalieri/addresses/{address}",
                       {"cert": read(demo_pki, "client-chain.pem"), "key": read(demo_pki, "client-key.pem"),
                        "ca_certs": read(demo_pki, "ca.pem"), "host": "127.0.0.1", "port": port,
                        "server_hostname": "localhost"})
    sandbox = tmp_path / "clone"
    (sandbox / "local").mkdir(parents=True)
    shutil.copytree(demo_pki, sandbox / "local" / "demo-pki")
    token_file = sandbox / "local" / "admin-token"
    token_file.write_text(settings.admin_token + "\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("ADMIN_TOKEN", None)

    with open(README) as f:
        blocks = code_blocks(f.read())
    ran, skipped, state = [], [], []
    for block in blocks:
        kind, reason = classify(block)
        first = block.splitlines()[0]
        if kind != "run":
            skipped.append((first, reason))
            continue
        for pattern, reason in SKIP_LINES.items():
            for line in pattern.finditer(block):
                skipped.append((line.group(0), reason))
            block = pattern.sub(":", block)
        script = as_run_here(block, served, peers)
        # One terminal, as a reader has: variables set by earlier blocks stay set.
        state += [line for line in script.splitlines() if line.startswith(("TOKEN=", "export "))]
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(state) + "\n" + script], cwd=sandbox, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (block, result.stdout, result.stderr)
        assert '"error": {' not in result.stdout and '"error":{' not in result.stdout, (block, result.stdout)
        ran.append((first, result.stdout))
    with capsys.disabled():
        print("\nREADME commands run:", *[f"  ran:     {first}" for first, _ in ran], sep="\n")
        print(*[f"  skipped: {first}  ({reason})" for first, reason in skipped], sep="\n")

    outputs = "\n".join(out for _, out in ran)
    firsts = [first for first, _ in ran]
    assert any(f.startswith("make run") for f in firsts) and any(f.startswith("openssl req") for f in firsts)
    assert any(f.startswith("printf") for f in firsts) and any(f.startswith("export DYNCERT_URL") for f in firsts)
    assert '"received": "hello\\n"' in outputs  # the echo example
    assert "O=Me, CN=me" in outputs  # the own certificate, named by the open demo port
    assert admin.get("/api/v1/employees/me/addresses/1").json["subject"] == "O=Me, CN=me"
    assert all(reason for _, reason in skipped)  # every skip says why


def test_the_extractor_sees_commands_and_skips_output():
    """The twin: the banner block is text, gcloud is skipped with a reason, make is run."""
    assert classify("dyncert is running: http://127.0.0.1:8080/")[0] == "text"
    assert classify("gcloud kms keyrings create dyncert")[0] == "skip"
    assert classify("make run     # the app")[0] == "run"
    blocks = code_blocks("Intro:\n\n    make run\n    make test\n\n```\n    not this\n```\n")
    assert blocks == ["make run\nmake test"]


@pytest.mark.slow  # `make -n` of every target the README names
def test_inline_make_commands_are_real_targets():
    """`make ...` written inline in the README: each is a target make knows (checked as `make -n`)."""
    with open(README) as f:
        inline = set(re.findall(r"`((?:[A-Z_]+=\S+ )*make [^`]+)`", f.read()))
    checked = []
    for command in sorted(inline):
        if re.search(r"\bmake (test|deploy|preflight)\b", command):
            continue  # see SKIP_LINES: these run for real even under -n
        assignments, _, rest = command.partition("make ")
        env = dict(os.environ, **dict(a.split("=", 1) for a in assignments.split()))
        args = [a.replace('"', '') for a in re.findall(r'[A-Z_]+="[^"]*"|\S+', rest)]
        result = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stderr)
        checked.append(command)
    assert "make bench-quick" in checked and "make bench QUICK=1" in checked
