"""Data flows one way: each module imports only modules to its left in LAYERS (STYLE.md)."""
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lpc"
# metrics are pure functions of tensors: they sit left of the evaluation that computes them on a model, which
# sits left of the trainer that records them
LAYERS = ["_extras", "files", "config", "heads", "losses", "attachment", "data", "distributed", "backbones", "model", "metrics",
          "evaluation", "trainer", "runs", "study", "report", "cli"]


def imported(path: Path) -> set[str]:
    names = set()
    for dots, module in re.findall(r"^\s*from (\.+)([a-z_]*)", path.read_text(), flags=re.M):
        if module:  # `from . import __version__` reads the package's version only
            # inside a subpackage (metrics, report) `from .x` is the subpackage itself
            names.add(path.parent.name if path.parent != PACKAGE and len(dots) == 1 else module)
    return names


@pytest.mark.parametrize("name", LAYERS)
def test_module_imports_only_layers_to_its_left(name):
    files = sorted((PACKAGE / name).glob("*.py")) if (PACKAGE / name).is_dir() else [PACKAGE / f"{name}.py"]
    allowed = set(LAYERS[:LAYERS.index(name)]) | {name}
    for path in files:
        assert imported(path) <= allowed, f"{path.name} imports {imported(path) - allowed}"


def test_every_module_is_placed():
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert modules - {"__init__", "__main__"} == set(LAYERS)
