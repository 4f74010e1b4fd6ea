"""The stages of docs/architecture.md: a stage imports only from the stages before it (and core)."""

import ast
from pathlib import Path

import pytest

import calofm

PACKAGE = Path(calofm.__file__).parent
# the data flow, left to right; each stage may import from the ones before it
STAGES = ["core", "geometry", "data", "simulate", "generative", "models", "adapt", "train", "inference",
          "evaluate", "export", "workflow", "cli"]


def imported_stages(file: Path) -> set[str]:
    """The calofm stages a module imports: ``calofm.X...`` and ``from calofm import X`` -> X.
    Relative imports are refused: they would hide a stage's dependencies from this check."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{file}: relative import (line {node.lineno}); use calofm.<stage>"
            if node.module == "calofm":
                names.update(f"calofm.{alias.name}" for alias in node.names)
            elif node.module:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.split(".")[1] for name in names if name.startswith("calofm.")}


def test_every_stage_is_listed():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(STAGES)


def test_stages_import_only_from_the_stages_before_them():
    wrong = []
    for file in sorted(PACKAGE.rglob("*.py")):
        stage = file.relative_to(PACKAGE).parts[0]
        if stage not in STAGES:  # the package's own __init__
            continue
        later = set(STAGES[STAGES.index(stage) + 1:])  # the package root's own names (__version__) are no stage
        wrong += [f"{file.relative_to(PACKAGE)} imports calofm.{s}" for s in imported_stages(file) & later]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_backward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import numpy\nfrom calofm.inference import load_model\nimport calofm.cli.main\n"
                      "from calofm import workflow\n\ndef f():\n    from calofm.export import export\n")
    assert imported_stages(module) == {"inference", "cli", "workflow", "export"}
    module.write_text("from .run import assemble\n")
    with pytest.raises(AssertionError, match="relative import"):
        imported_stages(module)
