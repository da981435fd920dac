"""What `pip install .` gives an admin: every library ctiserver imports is a declared
dependency, and the agent's pages are inside the package (the daemon did not start
from a wheel without them)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import ctiserver
from ctiserver.web.app import DEFAULT_STATIC

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(ctiserver.__file__).parent


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_library_ctiserver_imports_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {canonical(re.split(r"[\[=<>~! ;]", req, maxsplit=1)[0])
                for req in project["dependencies"]}
    owners = importlib.metadata.packages_distributions()
    missing: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "ctiserver":
                    continue
                dists = {canonical(d) for d in owners.get(top, [])}
                if not dists & declared:
                    missing[top] = str(path.relative_to(ROOT))
    assert missing == {}, f"imported but not in [project] dependencies: {missing}"


def test_the_agent_pages_are_inside_the_package() -> None:
    assert DEFAULT_STATIC == PACKAGE / "web" / "screenpop"
    for page in ("index.html", "supervisor.html", "app.js", "style.css"):
        assert (DEFAULT_STATIC / page).is_file(), page
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {"*.html", "*.js", "*.css"} <= set(data["package-data"]["*"])
