"""The architecture and the docs, checked: imports point one way, public names are
sorted, every command and setting is documented."""

import ast
import importlib
from pathlib import Path

import pytest

from flywheel.config import Settings

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src" / "flywheel"
DOCS = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))


def _our_imports(path: Path, *, top_level: bool = False) -> set[str]:
    found = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flywheel"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("flywheel"))
    return found


def _modules(package: str) -> list[Path]:
    base = SRC / package if package else SRC
    return list(base.rglob("*.py")) if base.is_dir() else [SRC / f"{package}.py"]


BASE = {"flywheel.records", "flywheel.errors", "flywheel.config", "flywheel.hookspecs"}


@pytest.mark.parametrize("module", ["records", "errors", "config"])
def test_base_modules_import_nothing_of_ours(module):
    assert _our_imports(SRC / f"{module}.py") == set()


def test_sdk_imports_only_the_base():
    for path in _modules("sdk"):
        outside = {m for m in _our_imports(path, top_level=True) if not m.startswith("flywheel.sdk")} - BASE
        assert outside == set(), f"{path.name} imports {outside}"
    # The one bridge: local mode writes through the ingest path, imported lazily.
    lazy = _our_imports(SRC / "sdk" / "transport.py") - _our_imports(
        SRC / "sdk" / "transport.py", top_level=True
    )
    assert lazy == {"flywheel.deploy", "flywheel.ingest", "flywheel.store"}


@pytest.mark.parametrize("stage", ["store", "ingest", "agents", "models", "workloads", "evaluate"])
def test_stages_never_import_the_edges(stage):
    for path in _modules(stage):
        edges = {m for m in _our_imports(path) if m.split(".")[1] in ("server", "cli", "web")}
        assert edges == set(), f"{path} imports {edges}"


def test_nothing_imports_the_edges_but_the_edges():
    for path in SRC.rglob("*.py"):
        top = path.relative_to(SRC).parts[0]
        if top in ("server", "cli", "web"):
            continue
        edges = {
            m
            for m in _our_imports(path)
            if len(m.split(".")) > 1 and m.split(".")[1] in ("server", "cli", "web")
        }
        assert edges == set(), f"{path} imports {edges}"


@pytest.mark.parametrize(
    "module",
    [
        "flywheel",
        "flywheel.records",
        "flywheel.errors",
        "flywheel.store",
        "flywheel.ingest",
        "flywheel.sdk",
        "flywheel.server",
    ],
)
def test_public_names_are_sorted_and_exist(module):
    mod = importlib.import_module(module)
    names = [n for n in mod.__all__ if n != "__version__"]
    # isort style: CONSTANTS, then Classes, then functions
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_every_setting_is_documented():
    config_doc = (ROOT / "docs" / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        assert f"FLYWHEEL_{name.upper()}" in config_doc, name
        assert field.description, name


def test_every_cli_command_is_documented():
    from typer.main import get_command

    from flywheel.cli import app

    group = get_command(app)
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for sub in subcommands:
                assert f"flywheel {name} {sub}" in DOCS, f"flywheel {name} {sub}"
        else:
            assert f"flywheel {name}" in DOCS, f"flywheel {name}"


def test_every_stage_says_what_it_owns():
    for package in (
        "sdk",
        "ingest",
        "store",
        "server",
        "cli",
        "agents",
        "integrations",
        "models",
        "workloads",
        "evaluate",
    ):
        doc = ast.get_docstring(ast.parse((SRC / package / "__init__.py").read_text()))
        assert doc and len(doc) > 40, package
