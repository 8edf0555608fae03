"""Deploy preflight: `python -m tools.preflight [--allow-local-kek] [--skip-project] [--root DIR]`.

Run by `make deploy` before `gcloud app deploy`. Every check runs, then each failure is listed
with what is missing and how to fix it; exit status 0 when all pass, 1 otherwise.

The config files are parsed, and the upload set listed, by the Google Cloud CLI's own code
(yaml_parsing and source_files_util, as `gcloud app deploy` calls them), in a subprocess with
the CLI's libraries on PYTHONPATH.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KMS_KEY_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
KMS_EXAMPLE = "projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY"
# Where POST .../csr {"key_location": "cloud_kms"} creates client keys (the app's kmskeys.KEY_RING).
KMS_KEY_RING = re.compile(r"^projects/[a-z0-9:.-]{1,100}/locations/[a-z0-9-]{1,63}/keyRings/[A-Za-z0-9_-]{1,63}$")
KMS_RING_EXAMPLE = "projects/PROJECT/locations/LOCATION/keyRings/RING"
# A PEM private key block with a body: a BEGIN marker alone (as in code that looks for one) is not a key.
PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----\r?\n"
    rb"(?:[A-Za-z0-9-]+:[^\n]*\r?\n)*\r?\n?"          # optional headers (Proc-Type, DEK-Info)
    rb"(?:[A-Za-z0-9+/=]{16,}\r?\n)+"                 # base64 body
    rb"[A-Za-z0-9+/=]*\r?\n?-----END \1PRIVATE KEY-----")
SECRET_NAMES = ("kek.bin",)
SECRET_SUFFIXES = (".key", ".p12", ".pfx", ".jks")
SECRET_DIRS = ("local/",)
CONFIGS = ("app.yaml", "cron.yaml", "index.yaml")  # cron.yaml is required, index.yaml optional

# Runs under the Google Cloud CLI's libraries; prints one JSON object.
GCLOUD_PROBE = r"""
import json, os, sys
root = sys.argv[1]
out = {"configs": {}, "files": None, "files_error": None, "env_variables": {}}
from googlecloudsdk.api_lib.app import yaml_parsing
from googlecloudsdk.command_lib.app import source_files_util


def check_cron(info):
    # gcloud leaves schedules to the server on Python 3 (croninfo imports groc on Python 2 only);
    # the CLI's groc parser runs fine on Python 3, so check them here. Timezones likewise.
    import zoneinfo
    from googlecloudsdk.appengine.googlecron import groctimespecification
    for job in info.parsed.cron:
        try:
            groctimespecification.GrocTimeSpecification(job.schedule)
        except Exception as e:
            raise ValueError(f"schedule {job.schedule!r} of {job.url} does not parse: {e}") from None
        if job.timezone:
            try:
                zoneinfo.ZoneInfo(job.timezone)
            except Exception:
                raise ValueError(f"timezone {job.timezone!r} of {job.url} is not an IANA time zone") from None


service = None
for name in ("app.yaml", "cron.yaml", "index.yaml"):
    path = os.path.join(root, name)
    if not os.path.exists(path):
        out["configs"][name] = "missing"
        continue
    try:
        if name == "app.yaml":
            service = yaml_parsing.ServiceYamlInfo.FromFile(path)
            out["env_variables"] = dict(service.parsed.env_variables or {})
        else:
            info = yaml_parsing.ConfigYamlInfo.FromFile(path)
            if name == "cron.yaml":
                check_cron(info)
        out["configs"][name] = "ok"
    except Exception as e:
        out["configs"][name] = "error: " + str(e)
if service is not None and os.path.exists(os.path.join(root, ".gcloudignore")):
    try:
        out["files"] = sorted(source_files_util.GetSourceFiles(
            root, service.parsed.skip_files.regex, service.HasExplicitSkipFiles(),
            service.runtime, service.env, root))
    except Exception as e:
        out["files_error"] = str(e)
print(json.dumps(out))
"""


class Check:
    """One named check: passed, or failed with a message that says how to fix it."""

    def __init__(self, name, ok, message, warning=None):
        self.name, self.ok, self.message, self.warning = name, ok, message, warning


def find_sdk_root():
    """The Google Cloud CLI's root, or None when gcloud is not installed."""
    if os.environ.get("CLOUDSDK_ROOT"):
        return os.environ["CLOUDSDK_ROOT"]
    gcloud = shutil.which("gcloud")
    if not gcloud:
        return None
    out = subprocess.run([gcloud, "info", "--format=value(installation.sdk_root)"],
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip() or None


def gcloud_probe(root, sdk):
    """Parse the configs and list the upload set with the CLI's code; a dict, or an error string."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([f"{sdk}/lib", f"{sdk}/lib/third_party"]))
    # Its own interpreter would do as well; ours keeps the probe independent of CLOUDSDK_PYTHON.
    result = subprocess.run([sys.executable, "-c", GCLOUD_PROBE, root], env=env, capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0:
        return f"the Google Cloud CLI's parser did not run: {result.stderr.strip()[-800:]}"
    return json.loads(result.stdout)


def check_configs(probe):
    checks = []
    for name in CONFIGS:
        status = probe["configs"].get(name, "missing")
        if status == "ok":
            checks.append(Check(name, True, f"{name} is valid for gcloud app deploy"))
        elif status == "missing" and name == "index.yaml":
            checks.append(Check(name, True, "index.yaml absent: no query needs a composite index"))
        elif status == "missing":
            checks.append(Check(name, False, f"{name} is missing: restore it from the repository "
                                             f"(git checkout -- {name})."))
        else:
            checks.append(Check(name, False, f"{name} is not valid for gcloud app deploy: "
                                             f"{status[len('error: '):].strip()}\n    Fix the file, "
                                             f"then run `make preflight` again."))
    return checks


def check_kms(environ, env_variables, allow_local):
    """KMS_KEY_NAME from the environment or app.yaml, well formed; or the explicit opt-out."""
    name, where = environ.get("KMS_KEY_NAME", ""), "the environment"
    if not name:
        name, where = str(env_variables.get("KMS_KEY_NAME", "") or ""), "app.yaml env_variables"
    if name and not KMS_KEY_NAME.match(name):
        return Check("KMS_KEY_NAME", False,
                     f"KMS_KEY_NAME from {where} is not a Cloud KMS key name: {name!r}.\n"
                     f"    Expected {KMS_EXAMPLE} (the key, not a version or a key ring).")
    if name:
        in_app_yaml = where == "app.yaml env_variables"
        return Check("KMS_KEY_NAME", True, f"KMS_KEY_NAME={name} (from {where})", warning=None if in_app_yaml else (
            "KMS_KEY_NAME is set in your shell only; the deployed app reads app.yaml's env_variables. "
            "Add it there:\n      env_variables:\n        KMS_KEY_NAME: " + name))
    if allow_local:
        return Check("KMS_KEY_NAME", True, "no KMS key: opted out (ALLOW_LOCAL_KEK)", warning=(
            "Deploying without KMS_KEY_NAME: private keys would be sealed under a key file on the "
            "instance, which is not kept between instances. Use Cloud KMS for real data."))
    return Check("KMS_KEY_NAME", False,
                 "KMS_KEY_NAME is not set: stored private keys are sealed with a Cloud KMS key in production.\n"
                 f"    Set it in app.yaml's env_variables (KMS_KEY_NAME: {KMS_EXAMPLE}) or in the\n"
                 "    environment, or opt out explicitly with --allow-local-kek (ALLOW_LOCAL_KEK=1).")


def check_kms_key_ring(environ, env_variables):
    """KMS_KEY_RING, KMS_PROTECTION and KMS_ENDPOINT, when set: a key ring name, HSM or SOFTWARE, and no
    stand-in endpoint in a deploy. Nothing is checked (no line) when none is set."""
    def setting(name):
        value = environ.get(name, "")
        return (value, "the environment") if value else (str(env_variables.get(name, "") or ""), "app.yaml env_variables")

    checks = []
    ring, where = setting("KMS_KEY_RING")
    if ring and not KMS_KEY_RING.match(ring):
        checks.append(Check("KMS_KEY_RING", False, f"KMS_KEY_RING from {where} is not a Cloud KMS key ring name: "
                            f"{ring[:200]!r}.\n    Expected {KMS_RING_EXAMPLE} (the key ring, not a key or a version)."))
    elif ring:
        checks.append(Check("KMS_KEY_RING", True, f"KMS_KEY_RING={ring} (from {where}): keys born in Cloud KMS; the "
                            "app's service account needs roles/cloudkms.signerVerifier, "
                            "roles/cloudkms.publicKeyViewer and cloudkms.cryptoKeys.create there"))
    protection, where = setting("KMS_PROTECTION")
    if protection and protection.strip().upper() not in ("HSM", "SOFTWARE"):
        checks.append(Check("KMS_PROTECTION", False, f"KMS_PROTECTION from {where} must be HSM or SOFTWARE, "
                            f"found {protection[:40]!r}."))
    endpoint, where = setting("KMS_ENDPOINT")
    if endpoint:
        checks.append(Check("KMS_ENDPOINT", False, f"KMS_ENDPOINT is set in {where} ({endpoint[:80]!r}): it points "
                            "the app at a local KMS stand-in over plain gRPC, for tests and `make run` only. "
                            "Unset it to deploy."))
    return checks


def check_requirements(root):
    path = os.path.join(root, "requirements.txt")
    if not os.path.exists(path):
        return Check("requirements.txt", False, "requirements.txt is missing: App Engine installs the "
                                                "app's dependencies from it.")
    bad = []
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            # An environment marker may follow (`; python_version >= "3.13"`): it says where, not which version.
            requirement, _, marker = line.partition(";")
            if (line.startswith("-") or (";" in line and not marker.strip()) or
                    not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==[^=<>!~*,;\s]+$", requirement.strip())):
                bad.append(f"line {number}: {raw.strip()}")
    if bad:
        return Check("requirements.txt", False, "requirements.txt has lines not pinned with `==` "
                     "(a deploy would install whatever is newest):\n      " + "\n      ".join(bad) +
                     "\n    Pin each to the version you tested, e.g. `pip freeze | grep -i NAME`.")
    return Check("requirements.txt", True, "requirements.txt: every line pinned with ==")


def secret_reason(root, relpath):
    """Why the file at `relpath` must not be uploaded, or None."""
    name = os.path.basename(relpath).lower()
    if relpath.startswith(SECRET_DIRS):
        return "local state (local/)"
    if name in SECRET_NAMES:
        return "a local key-encryption key"
    if name.endswith(SECRET_SUFFIXES):
        return "a key or key store file"
    try:
        with open(os.path.join(root, relpath), "rb") as f:
            data = f.read(4 * 1024 * 1024)
    except OSError:
        return None
    if PEM_PRIVATE_KEY.search(data):
        return "contains a PEM private key"
    return None


def check_upload_set(root, probe):
    if not os.path.exists(os.path.join(root, ".gcloudignore")):
        return Check("upload set", False, ".gcloudignore is missing: gcloud would upload local/, tests/ "
                     "and the demo keys. Restore it (git checkout -- .gcloudignore).")
    if probe.get("files_error") or probe.get("files") is None:
        return Check("upload set", False, "gcloud could not list the upload set: "
                     f"{probe.get('files_error') or 'app.yaml did not parse'}")
    found = [(p, secret_reason(root, p)) for p in probe["files"]]
    found = [(p, why) for p, why in found if why]
    if found:
        return Check("upload set", False, "gcloud app deploy would upload secrets:\n      " +
                     "\n      ".join(f"{p}: {why}" for p, why in found) +
                     "\n    Move them out of the app directory, or add them to .gcloudignore.")
    return Check("upload set", True, f"upload set: {len(probe['files'])} files, no private keys")


def check_project(environ):
    project = environ.get("CLOUDSDK_CORE_PROJECT", "")
    source = "CLOUDSDK_CORE_PROJECT"
    if not project and shutil.which("gcloud"):
        out = subprocess.run(["gcloud", "config", "get-value", "project"], capture_output=True,
                             text=True, timeout=120)
        project, source = out.stdout.strip(), "gcloud config"
    if not project or project == "(unset)":
        return Check("project", False, "No Google Cloud project is configured.\n"
                     "    Run `gcloud config set project PROJECT_ID` (or set CLOUDSDK_CORE_PROJECT).")
    return Check("project", True, f"project {project} (from {source})")


def run_checks(root=ROOT, environ=None, allow_local=False, skip_project=False):
    """Every check, in order; a list of Check."""
    environ = os.environ if environ is None else environ
    allow_local = allow_local or environ.get("ALLOW_LOCAL_KEK", "").lower() in ("1", "true", "yes", "on")
    skip_project = skip_project or environ.get("PREFLIGHT_SKIP_PROJECT", "") == "1"
    sdk = find_sdk_root()
    checks = []
    if sdk is None:
        checks.append(Check("gcloud", False, "The Google Cloud CLI (gcloud) is not installed: "
                            "https://cloud.google.com/sdk/docs/install"))
        probe = {"configs": {n: "error: gcloud is needed to validate it" for n in CONFIGS}, "files": None,
                 "files_error": "gcloud is not installed", "env_variables": {}}
    else:
        checks.append(Check("gcloud", True, f"gcloud installed at {sdk}"))
        probe = gcloud_probe(root, sdk)
        if isinstance(probe, str):
            checks.append(Check("gcloud parser", False, probe))
            probe = {"configs": {}, "files": None, "files_error": probe, "env_variables": {}}
    checks += check_configs(probe)
    checks.append(check_kms(environ, probe["env_variables"], allow_local))
    checks += check_kms_key_ring(environ, probe["env_variables"])
    checks.append(check_requirements(root))
    checks.append(check_upload_set(root, probe))
    if skip_project:
        checks.append(Check("project", True, "project check skipped (--skip-project)"))
    else:
        checks.append(check_project(environ))
    return checks


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.preflight", description=__doc__.splitlines()[0])
    parser.add_argument("--allow-local-kek", action="store_true",
                        help="deploy without KMS_KEY_NAME (same as ALLOW_LOCAL_KEK=1); not for real keys")
    parser.add_argument("--skip-project", action="store_true",
                        help="do not require a configured project (same as PREFLIGHT_SKIP_PROJECT=1)")
    parser.add_argument("--root", default=ROOT, help="the app directory (default: this checkout)")
    args = parser.parse_args(argv)
    checks = run_checks(os.path.abspath(args.root), allow_local=args.allow_local_kek,
                        skip_project=args.skip_project)
    for check in checks:
        if check.ok:
            print(f"ok    {check.message}")
        if check.warning:
            print(f"WARN  {check.warning}")
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"\npreflight: {len(failed)} check{'s' if len(failed) != 1 else ''} failed; "
              "nothing was deployed.", file=sys.stderr)
        for check in failed:
            print(f"FAIL  {check.name}: {check.message}", file=sys.stderr)
        return 1
    print(f"\npreflight: all {len(checks)} checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
