"""In CI (``CI`` set) nothing may skip: a missing data set, tool or module fails the test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SKIPPING = """
import pytest

from tests.infra import import_or_skip, require, skip_or_fail


def test_plain_skip():
    pytest.skip("no data here")


def test_importorskip():
    pytest.importorskip("a_module_that_does_not_exist")


def test_our_import_or_skip():
    import_or_skip("another_module_that_does_not_exist")


def test_missing_tool():
    require("a-tool-that-is-not-installed", "for the test")


def test_missing_dataset():
    skip_or_fail("MovieLens 100K not found at /nowhere")


@pytest.mark.skip(reason="marked")
def test_marked_skip():
    pass


@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
"""


def _run(tmp_path: Path, ci: bool) -> str:
    test = tmp_path / "test_skipping.py"
    test.write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(test)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return out.stdout + out.stderr


@pytest.mark.parametrize("ci", [False, True])
def test_skips_are_failures_only_in_ci(tmp_path: Path, ci: bool) -> None:
    out = _run(tmp_path, ci)
    if ci:
        # A skip mark acts in setup, so pytest reports that one as an error: red all the same.
        assert "5 failed, 1 xfailed, 1 error" in out, out
        assert "CI must not skip" in out or "skipped in CI" in out, out
    else:
        assert "6 skipped, 1 xfailed" in out, out
