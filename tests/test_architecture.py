"""The stages of docs/architecture.md: a stage imports only from the stages before it (and core)."""

import ast
from pathlib import Path

import calofm

PACKAGE = Path(calofm.__file__).parent
# the data flow, left to right; each stage may import from the ones before it
STAGES = ["core", "geometry", "data", "simulate", "generative", "models", "adapt", "train", "inference",
          "evaluate", "export", "workflow", "cli"]


def imported_stages(file: Path) -> set[str]:
    """The calofm stages a module imports (``calofm.X...`` -> X)."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
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
        allowed = set(STAGES[:STAGES.index(stage) + 1])
        wrong += [f"{file.relative_to(PACKAGE)} imports calofm.{s}" for s in imported_stages(file) - allowed]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_backward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import numpy\nfrom calofm.inference import load_model\nimport calofm.cli.main\n")
    assert imported_stages(module) == {"inference", "cli"}
