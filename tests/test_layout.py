"""The project's shape: no import cycle among the package's modules, README's Layout section names every room, and
each version is written in one place (or, where a tool needs a literal, agrees with it)."""

from __future__ import annotations

import ast
import graphlib
import json
import re
from importlib.metadata import version

import pytest

import bundle
from bundle import BUNDLE_ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the development environment has it

PACKAGE = BUNDLE_ROOT / "bundle"


def _module_name(path) -> str:
    parts = path.relative_to(BUNDLE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path, modules: set[str]) -> set[str]:
    """The bundle's modules that ``path`` imports anywhere, at the top or inside a function (a lazy import that
    breaks a cycle is still the cycle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        found.update(name for name in names if name in modules)
    return found


def test_the_modules_import_each_other_without_a_cycle():
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        # a package's __init__ gathering its own submodules is how packages work, not a cycle between rooms
        graph[name] = {m for m in _imported_modules(path, set(paths)) if not m.startswith(f"{name}.")} - {name}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def _layout_section() -> str:
    readme = (BUNDLE_ROOT / "README.md").read_text()
    return re.search(r"^## Layout\n(.*?)^## ", readme, flags=re.S | re.M).group(1)


@pytest.mark.parametrize(
    "entry",
    sorted(
        [
            f"{p.name}/" if p.is_dir() else p.name
            for p in PACKAGE.iterdir()
            if p.name not in ("__init__.py", "__pycache__")
        ]
        + [p.name for p in (BUNDLE_ROOT / "scripts").glob("*.py")]
        + [p.name for p in (BUNDLE_ROOT / "configs").glob("*.json")]
    ),
)
def test_the_readme_layout_names_every_module_script_and_config(entry):
    assert re.search(rf"(?<![\w/]){re.escape(entry)}", _layout_section()), f"README's Layout section misses {entry}"


def test_versions_agree_with_their_one_source():
    metadata = json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text())
    project = tomllib.loads((BUNDLE_ROOT / "pyproject.toml").read_text())["project"]
    assert project["dynamic"] == ["version"] and version("lckd-brats-bundle") == bundle.__version__
    pins = dict(re.match(r"([\w.-]+)==([\w.]+)$", spec).groups() for spec in project["dependencies"] if "==" in spec)
    assert metadata["monai_version"] == pins["monai"], "metadata.json's monai_version is not pyproject's monai pin"
    assert "pytorch_version" in (BUNDLE_ROOT / "Makefile").read_text(), (
        "the Makefile no longer pins torch from metadata.json"
    )
    test_extra = dict(spec.split("==") for spec in project["optional-dependencies"]["test"] if "==" in spec)
    hooks = (BUNDLE_ROOT / ".pre-commit-config.yaml").read_text()
    assert hooks.count(f'"ruff=={test_extra["ruff"]}"') == 2, "pre-commit's ruff is not the test extra's"


def test_the_readme_layout_names_every_command():
    scripts = tomllib.loads((BUNDLE_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    missing = [name for name in scripts if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", _layout_section())]
    assert not missing, f"README's Layout section misses the commands {missing}"
