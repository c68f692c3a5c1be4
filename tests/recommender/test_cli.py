"""``marquee serve`` argument and settings handling (without starting gunicorn)."""

from __future__ import annotations

import pytest

from services.recommender import cli


def test_missing_required_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("MARQUEE_RECOMMENDER_REGISTRY_ROOT", "MARQUEE_RECOMMENDER_MODEL_NAME"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert "registry_root" in err
    assert "model_name" in err


def test_options_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execv", lambda exe, argv: calls.append(argv))
    # Every variable the CLI writes is set through monkeypatch first, so it is restored after.
    for var in ("REGISTRY_ROOT", "BIND"):
        monkeypatch.setenv(f"MARQUEE_RECOMMENDER_{var}", "unset")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("MARQUEE_RECOMMENDER_MODEL_NAME", "from-env")
    assert cli.main(["--registry", "/tmp/reg", "--model", "m", "--bind", "127.0.0.1:18499"]) == 0
    assert cli.os.environ["MARQUEE_RECOMMENDER_MODEL_NAME"] == "m"
    assert cli.os.environ["MARQUEE_RECOMMENDER_BIND"] == "127.0.0.1:18499"
    assert calls
    assert calls[0][-2:] == ["-c", str(cli.CONF)]
