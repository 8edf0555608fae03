"""The `dyncert` distribution: a wheel holding dyncert/ only, installable with its extras in a clean venv."""

import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile

import pytest

import dyncert

pytestmark = pytest.mark.slow  # wheel builds, clean venvs and mypy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, **kwargs):
    """Run a command to completion; its output in the assertion message when it fails."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """`pip wheel .` built from a copy of the tree (setuptools writes build/ and egg-info next to the sources)."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), source)
    shutil.copy(os.path.join(ROOT, "LICENSE"), source)
    shutil.copytree(os.path.join(ROOT, "dyncert"), source / "dyncert",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheels")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
         "-w", str(out), str(source)])
    (built,) = out.glob("dyncert-*.whl")
    return built


def test_wheel_holds_only_dyncert(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names}
    assert packages == {"dyncert", f"dyncert-{dyncert.__version__}.dist-info"}
    assert "dyncert/py.typed" in names and "dyncert/requests.py" in names and "dyncert/httpx.py" in names
    assert "dyncert/signers/_binding.py" in names and "dyncert/signers/local.py" in names
    assert not any(name.startswith(("main", "models", "handlers", "tests", "devserver")) for name in names)


def test_wheel_metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(f"dyncert-{dyncert.__version__}.dist-info/METADATA").decode()
    assert f"Version: {dyncert.__version__}\n" in metadata
    assert "Requires-Python: >=3.11" in metadata
    assert "Requires-Dist: cryptography" in metadata
    assert 'extra == "requests"' in metadata and 'extra == "httpx"' in metadata


def test_wheel_says_license_authors_urls_and_classifiers(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(f"dyncert-{dyncert.__version__}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert f"dyncert-{dyncert.__version__}.dist-info/licenses/LICENSE" in names
    assert "Author: The dyncert authors" in metadata
    assert metadata.count("Project-URL: ") >= 2
    for classifier in ("Programming Language :: Python :: 3.13", "Typing :: Typed",
                       "Topic :: Security :: Cryptography"):
        assert f"Classifier: {classifier}" in metadata
    with open(os.path.join(ROOT, "LICENSE")) as f:
        head = f.read(300)
    assert "Apache License" in head and "Version 2.0" in head


def test_every_subpackage_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    dyncert_dir = os.path.join(ROOT, "dyncert")
    for directory, _, files in os.walk(dyncert_dir):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(directory, name), ROOT).replace(os.sep, "/")
                assert rel in names, rel


def test_requirements_txt_stays_the_deploy_source(wheel):
    # App Engine installs requirements.txt when it exists; the pyproject must not replace it.
    assert os.path.isfile(os.path.join(ROOT, "requirements.txt"))
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert 'include = ["dyncert", "dyncert.*"]' in f.read()


CHECK = """
import importlib, sys
import dyncert
print(dyncert.__version__)
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        print(name, "ok")
    except ImportError as e:
        print(name, "missing", e.name)
"""


@pytest.mark.slow
@pytest.mark.parametrize("extras, expected", [
    ("", {"dyncert.requests": "missing requests", "dyncert.httpx": "missing httpx"}),
    ("[requests,httpx]", {"dyncert.requests": "ok", "dyncert.httpx": "ok"}),
])
def test_installs_in_a_clean_venv(tmp_path, wheel, extras, expected):
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}{extras}"])
    # Outside the source tree, so the installed copy is the one imported.
    lines = run([python, "-c", CHECK, *expected], cwd=str(tmp_path)).splitlines()
    assert lines[0] == dyncert.__version__
    assert {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines[1:]} == expected


def test_package_is_mypy_strict_clean():
    # The whole package, every module (issue 14): `mypy --strict dyncert` as a user's CI would run it.
    out = run([sys.executable, "-m", "mypy", "--strict", "dyncert"], cwd=ROOT)
    assert "Success" in out and f"{len(list_modules())} source files" in out


def list_modules():
    """Every .py file of the package, subpackages included (dyncert/calls/)."""
    return [os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(ROOT, "dyncert"))
            for name in names if name.endswith(".py")]


def test_no_module_is_exempt_from_the_check():
    # Per-module exemptions would make the clean run above prove nothing for those modules.
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        config = tomllib.load(f)["tool"]["mypy"]
    assert "overrides" not in config and "untyped_calls_exclude" not in config
    assert not any(key.startswith(("ignore", "allow_untyped", "disable")) for key in config)


def test_mypy_strict_catches_a_typing_error(tmp_path):
    # The twin: the same check fails on code that is not typed.
    bad = tmp_path / "untyped.py"
    bad.write_text("def f(x):\n    return x\n")
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", str(bad)], capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 1 and "Function is missing a type annotation" in result.stdout
