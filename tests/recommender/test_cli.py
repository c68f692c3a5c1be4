"""``marquee serve`` argument and settings handling (without starting gunicorn)."""

from __future__ import annotations

from pathlib import Path

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
    for var in ("REGISTRY_ROOT", "BIND", "WAIT_FOR_MODEL"):
        monkeypatch.setenv(f"MARQUEE_RECOMMENDER_{var}", "unset")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("MARQUEE_RECOMMENDER_MODEL_NAME", "from-env")
    argv = ["--registry", "/tmp/reg", "--model", "m", "--bind", "127.0.0.1:18499", "--wait"]
    assert cli.main(argv) == 0
    assert cli.os.environ["MARQUEE_RECOMMENDER_MODEL_NAME"] == "m"
    assert cli.os.environ["MARQUEE_RECOMMENDER_BIND"] == "127.0.0.1:18499"
    assert calls
    assert calls[0][-2:] == ["-c", str(cli.CONF)]


def test_dev_server_refuses_a_public_bind(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[object] = []
    monkeypatch.setattr(cli, "_run_dev", ran.append)
    for var in ("REGISTRY_ROOT", "MODEL_NAME", "BIND", "WAIT_FOR_MODEL"):
        monkeypatch.setenv(f"MARQUEE_RECOMMENDER_{var}", "unset")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    argv = ["--registry", "/tmp/reg", "--model", "m", "--wait", "--dev"]
    assert cli.main([*argv, "--bind", "0.0.0.0:8082"]) == 2
    assert "loopback only" in capsys.readouterr().err
    assert not ran, "Werkzeug's development server must never listen on a public address"
    monkeypatch.setattr(cli, "_run_dev", lambda settings: ran.append(settings) or 0)
    assert cli.main([*argv, "--bind", "127.0.0.1:18498"]) == 0
    assert len(ran) == 1


def test_bad_bind_or_signing_key_file_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli.os, "execv", lambda exe, argv: None)
    for var in ("REGISTRY_ROOT", "MODEL_NAME", "BIND", "WAIT_FOR_MODEL"):
        monkeypatch.setenv(f"MARQUEE_RECOMMENDER_{var}", "unset")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    argv = ["--registry", "/tmp/reg", "--model", "m", "--wait"]
    assert cli.main([*argv, "--bind", "8082"]) == 2
    assert "host:port" in capsys.readouterr().err
    monkeypatch.setenv("MARQUEE_MODEL_SIGNING_KEY_FILE", str(tmp_path / "missing"))
    assert cli.main([*argv, "--bind", "127.0.0.1:8082"]) == 2
    assert "signing key" in capsys.readouterr().err


def test_a_wrong_registry_or_model_is_named_at_start(
    registry_root: Path,
    svd_v1: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    execs: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execv", lambda exe, argv: execs.append(argv))
    for var in ("REGISTRY_ROOT", "MODEL_NAME"):
        monkeypatch.setenv(f"MARQUEE_RECOMMENDER_{var}", "unset")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("MARQUEE_RECOMMENDER_MODEL_REF", "stable")
    monkeypatch.setenv("MARQUEE_RECOMMENDER_WAIT_FOR_MODEL", "false")
    nowhere = tmp_path / "models" / "registry"
    cases = [
        (["--registry", str(nowhere), "--model", "synthetic"], [str(nowhere), "does not exist"]),
        (
            ["--registry", str(registry_root), "--model", "movies"],
            ["'movies'", str(registry_root), "it has synthetic"],
        ),
        (
            ["--registry", str(registry_root), "--model", "synthetic", "--ref", "canary"],
            ["'synthetic'", "no 'canary' version"],
        ),
    ]
    for argv, words in cases:
        assert cli.main(argv) == 3  # not found (services.common.cliutil)
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert all(w in err for w in words), err
    assert not execs, "a misconfigured server must not start and wait"
    assert cli.main(["--registry", str(nowhere), "--model", "synthetic", "--wait"]) == 0
    assert cli.main(["--registry", str(registry_root), "--model", "synthetic"]) == 0
    assert len(execs) == 2
