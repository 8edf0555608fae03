"""`make bench` quick mode: reachable from make, and its verdicts marked as indicative."""

import os
import subprocess

import pytest

from bench import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def result(quick):
    return {"meta": {"python": "Python 3", "openssl": "OpenSSL 3", "cpus": 2, "rounds": 2, "duration": 0.2,
                     "quick": quick},
            "ratios": {}, "goals": [("warm >= 0.97x static", "0.91x", False), ("pooled >= 10x", "11x", True),
                                    ("not run", "not measured", None)]}


def test_quick_mode_marks_every_verdict_as_indicative():
    text = report.table(result(quick=True))
    assert "QUICK MODE" in text and "indicative" in text
    assert "~fail warm >= 0.97x static" in text and "~pass pooled" in text
    assert "FAIL" not in text.replace("QUICK MODE", "")


def test_full_mode_keeps_plain_verdicts():
    """The twin: a full run's FAIL is a verdict."""
    text = report.table(result(quick=False))
    assert "  FAIL  warm >= 0.97x static" in text and "  PASS  pooled" in text and "indicative" not in text


@pytest.mark.slow  # `make -n` twice
def test_make_offers_a_quick_bench():
    for args in (["bench-quick"], ["bench", "QUICK=1"]):
        out = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and "-m bench --quick" in out.stdout, out.stdout + out.stderr
    full = subprocess.run(["make", "-n", "bench"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "--quick" not in full.stdout
