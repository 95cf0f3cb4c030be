"""The layers point one way: fusion (torch only) <- experiments -> analysis (neither torch nor
experiments), experiments' packages ordered bottom-up, no import cycle, no path out of the repo.

Imports are read from the source (every ``import`` and ``from ... import``, inside functions
too), so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fusion", "experiments", "analysis")
# experiments' own layers, lowest first; a module may import its own layer and any below it.
# Top-level modules of experiments/ are the commands: they may import everything.
EXPERIMENT_LAYERS = ["infra", "data", "models", "inference", "selftraining", "pipeline", "tta", "classification"]
# Third-party roots each top package may not import.
FORBIDDEN = {"analysis": {"torch", "experiments", "fusion", "mmseg", "mmcv", "mmengine"},
             "fusion": {"experiments", "analysis", "hydra", "omegaconf", "mmseg", "mmcv", "mmengine"}}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of every module ``name`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    return out


MODULES = _modules()
GRAPH = {name: {i for i in _imports(name, path) if i in MODULES and i != name} for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "experiments" or len(parts) < 2 or parts[1] not in EXPERIMENT_LAYERS:
        return None
    return EXPERIMENT_LAYERS.index(parts[1])


def test_top_packages_import_only_downwards():
    bad = []
    for name, path in MODULES.items():
        top = name.split(".")[0]
        for imported in _imports(name, path):
            if imported.split(".")[0] in FORBIDDEN.get(top, set()):
                bad.append(f"{name} imports {imported}")
    assert not bad, "upward or forbidden imports:\n" + "\n".join(sorted(bad))


def test_experiment_packages_import_only_their_layer_or_below():
    bad = []
    for name, targets in GRAPH.items():
        here = _layer(name)
        if here is None:
            continue
        for target in targets:
            if target.split(".")[0] != "experiments":
                continue
            there = _layer(target)
            if there is None and target != "experiments":
                bad.append(f"{name} imports the command {target}")
            elif there is not None and there > here:
                bad.append(f"{name} ({EXPERIMENT_LAYERS[here]}) imports {target} ({EXPERIMENT_LAYERS[there]})")
    assert not bad, "imports that point up the layers:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    """Depth-first search over module -> imported modules (package __init__ edges included)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH[node]):
            if target.startswith(node + "."):
                continue  # a package importing its own submodules (its public names)
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


# A relative path that climbs out of the repository (read from the file's own folder; shell
# scripts and the Makefile run from the root, so from there), and a capitalised document name
# (README.md, ...) that no tracked file has: both point at something a user of the repository
# does not have. The one exception is the setup script's optional folder of prebuilt wheels
# (the default of MMCV_WHEELS, used only when it exists).
_CLIMB = re.compile(r"(?<![\w.])(?:\.\./)+[\w.-]+")
_DOCUMENT = re.compile(r"\b[A-Z][A-Z_]+\.md\b")


def test_no_tracked_file_points_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    names = {Path(name).name for name in tracked}
    hits = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        base = ROOT if path.suffix == ".sh" or path.name == "Makefile" else path.parent
        for line in text.splitlines():
            if name == "scripts/setup.sh" and line.startswith("WHEELS=${MMCV_WHEELS:-"):
                continue
            for match in _CLIMB.finditer(line):
                if ROOT not in (base / match.group(0)).resolve().parents:
                    hits.append(f"{name}: {match.group(0)}")
        hits += [f"{name}: {m.group(0)}" for m in _DOCUMENT.finditer(text) if m.group(0) not in names]
    assert not hits, "files that point outside the repository:\n" + "\n".join(hits)


@pytest.mark.parametrize("module", ["analysis.metrics", "analysis.tables", "analysis.figures", "analysis.report",
                                    "analysis.tta", "analysis.classification", "analysis.reference"])
def test_analysis_modules_import_without_torch(module):
    """Loaded in a fresh interpreter, the analysis layer pulls in neither torch nor experiments."""
    code = (f"import sys, {module}; bad = [m for m in ('torch', 'experiments', 'fusion') if m in sys.modules];"
            " sys.exit(f'imported {bad}' if bad else 0)")
    done = subprocess.run([__import__("sys").executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:] or done.stdout
