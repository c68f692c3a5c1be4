"""Every third-party import is declared in the extra of the service that imports it.

``make lint`` runs this.  Each ``services/<name>/`` is installed with the base dependencies plus
its own extra (``pip install marquee[<name>]``, one image per service), so an import that is
only satisfied by *another* service's extra works in the shared dev environment and breaks in
that service's image.  deptry checks a project against the union of its extras, which is
exactly the blind spot, hence this check:

- ``services/common`` may import only base dependencies (every service installs it);
- ``services/<name>`` may import base plus the ``<name>`` extra;
- a service never imports another service (only ``services.common``);
- ``benchmarks``, ``scripts`` and ``tests`` may import anything declared anywhere.

Imports under ``if TYPE_CHECKING:`` are ignored: they never run.

    python -m scripts.check_deps            # exit 1 and one line per problem
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = frozenset({"services", "tests", "benchmarks", "scripts"})
# Top-level modules that do not map to a distribution through packages_distributions().
ALIASES: dict[str, str] = {}
# Modules of the top-level dispatcher that imports every service on purpose (lazily).
DISPATCHERS = frozenset({"services/cli.py", "services/__main__.py"})


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    """The distribution name of a PEP 508 requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    if not match:
        raise ValueError(f"unreadable requirement {spec!r}")
    return normalize(match.group(1))


@dataclass(frozen=True)
class Import:
    """One import statement's top-level module, where it is."""

    module: str
    full: str
    path: Path
    line: int


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
            if name == "TYPE_CHECKING":
                for child in node.body:
                    for sub in ast.walk(child):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def imports(path: Path) -> Iterator[Import]:
    """Absolute imports in a module, those under ``if TYPE_CHECKING`` left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = _type_checking_lines(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name.split(".")[0], alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield Import(node.module.split(".")[0], node.module, path, node.lineno)


def declared(pyproject: Path) -> tuple[set[str], dict[str, set[str]]]:
    """Base dependencies and each extra's, as normalized distribution names."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    base = {requirement_name(s) for s in project.get("dependencies", [])}
    extras = {
        name: {requirement_name(s) for s in specs}
        for name, specs in project.get("optional-dependencies", {}).items()
    }
    return base, extras


def check(root: Path, module_map: dict[str, list[str]] | None = None) -> list[str]:
    """Problems found under ``root`` (a project with pyproject.toml and services/)."""
    module_map = module_map if module_map is not None else dict(packages_distributions())
    base, extras = declared(root / "pyproject.toml")
    everything = base.union(*extras.values())
    stdlib = set(sys.stdlib_module_names)
    problems: list[str] = []

    def dists(module: str) -> set[str]:
        if module in ALIASES:
            return {normalize(ALIASES[module])}
        return {normalize(d) for d in module_map.get(module, [])}

    def scope(rel: str) -> tuple[str, set[str]] | None:
        parts = rel.split("/")
        if rel in DISPATCHERS:
            return None
        if parts[0] == "services" and len(parts) > 2:
            service = parts[1]
            if service == "common":
                return "common", base
            return service, base | extras.get(service, set())
        if parts[0] in {"benchmarks", "scripts", "tests"}:
            return parts[0], everything
        return None

    for folder in ("services", "benchmarks", "scripts", "tests"):
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            where = scope(rel)
            if where is None:
                continue
            owner, allowed = where
            for imp in imports(path):
                at = f"{rel}:{imp.line}"
                if imp.module == "services" and folder == "services":
                    parts = imp.full.split(".")
                    other = parts[1] if len(parts) > 1 else ""
                    if other and owner != "common" and other not in {"common", owner}:
                        problems.append(f"{at}: {owner} imports another service ({imp.full})")
                    if owner == "common" and other and other != "common":
                        problems.append(f"{at}: common imports a service ({imp.full})")
                    continue
                if imp.module in FIRST_PARTY or imp.module in stdlib or imp.module == "__future__":
                    continue
                provided = dists(imp.module)
                if not provided:
                    problems.append(f"{at}: '{imp.module}' is not installed by any distribution")
                elif not provided & allowed:
                    need = ", ".join(sorted(provided))
                    extra = "base dependencies" if owner == "common" else f"extra '{owner}'"
                    if owner in {"benchmarks", "scripts", "tests"}:
                        extra = "any dependency group"
                    problems.append(f"{at}: imports '{imp.module}' ({need}), not in {extra}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Print one line per undeclared import; exit 1 when there is any."""
    ap = argparse.ArgumentParser(prog="python -m scripts.check_deps", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--root", type=Path, default=ROOT, help="project folder (default: this one)")
    args = ap.parse_args(argv)
    problems = check(args.root)
    for problem in problems:
        print(f"check_deps: {problem}", file=sys.stderr)
    if problems:
        print(f"check_deps: {len(problems)} undeclared import(s); declare them in pyproject.toml",
              file=sys.stderr)  # fmt: skip
        return 1
    print("check_deps: every import is declared where it is used")
    return 0


if __name__ == "__main__":
    sys.exit(main())
