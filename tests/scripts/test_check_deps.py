"""``scripts.check_deps``: an import satisfied only by another service's extra is caught."""

from __future__ import annotations

from pathlib import Path

from scripts.check_deps import check, requirement_name

PYPROJECT = """
[project]
name = "x"
dependencies = ["numpy==2.3.5", "Flask>=3"]
[project.optional-dependencies]
ingest = ["requests==2.32.5", "pyarrow==22.0.0"]
recommender = ["gunicorn==23.0.0"]
dev = ["pytest==8.4.2"]
"""
MODULES = {
    "numpy": ["numpy"],
    "flask": ["Flask"],
    "requests": ["requests"],
    "pyarrow": ["pyarrow"],
    "gunicorn": ["gunicorn"],
    "pytest": ["pytest"],
}


def _project(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_clean_project_passes(tmp_path: Path) -> None:
    root = _project(tmp_path, {
        "services/common/a.py": "import numpy\nfrom flask import Flask\nimport json\n",
        "services/ingest/b.py": "import requests\nimport pyarrow.parquet as pq\n"
                                "from services.common import a\n",
        "services/recommender/c.py": "import gunicorn\n",
        "tests/t.py": "import pytest\nimport requests\n",
    })  # fmt: skip
    assert check(root, MODULES) == []


def test_an_import_only_another_extra_provides_is_caught(tmp_path: Path) -> None:
    root = _project(tmp_path, {"services/recommender/c.py": "def f():\n    import requests\n"})
    (problem,) = check(root, MODULES)
    assert "services/recommender/c.py:2" in problem and "extra 'recommender'" in problem


def test_common_may_use_base_dependencies_only(tmp_path: Path) -> None:
    root = _project(tmp_path, {"services/common/s.py": "import pyarrow as pa\n"})
    (problem,) = check(root, MODULES)
    assert "'pyarrow'" in problem and "base dependencies" in problem


def test_services_never_import_each_other(tmp_path: Path) -> None:
    root = _project(tmp_path, {"services/recommender/c.py": "from services.ingest import b\n"})
    (problem,) = check(root, MODULES)
    assert "imports another service (services.ingest)" in problem


def test_type_checking_imports_and_unknown_modules(tmp_path: Path) -> None:
    root = _project(tmp_path, {
        "services/recommender/c.py": "from typing import TYPE_CHECKING\n"
                                     "if TYPE_CHECKING:\n    import pyarrow\n",
        "services/ingest/d.py": "import nosuchmodule\n",
    })  # fmt: skip
    (problem,) = check(root, MODULES)
    assert "'nosuchmodule' is not installed by any distribution" in problem


def test_requirement_names_are_normalized() -> None:
    assert requirement_name("scikit_surprise==1.1.5") == "scikit-surprise"
    assert requirement_name("PyYAML>=6 ; python_version>'3'") == "pyyaml"


def test_this_project_declares_every_import() -> None:
    assert check(Path(__file__).resolve().parents[2]) == []
