"""The import direction of the package: low layers never import high ones (README, "Layout and conventions")."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import kexue

SRC = Path(kexue.__file__).parent
HIGH = {"data", "train", "eval", "experiments", "cli"}
# layer -> kexue subpackages (and third-party packages) it must not import
FORBIDDEN = {
    "ops": {"nn", "models", "losses", *HIGH, "matplotlib"},
    "nn": {"models", "losses", *HIGH, "matplotlib"},
    "models": {"losses", *HIGH, "matplotlib"},
    "losses": {*HIGH, "matplotlib"},
    "data": {"ops", "nn", "models", "losses", "train", "eval", "experiments", "cli", "matplotlib"},
    "train": {"eval", "experiments", "cli", "matplotlib"},
    "eval": {"experiments", "cli"},
    "experiments": {"cli"},
}


def _imports(path: Path) -> set[str]:
    """Top-level names imported by ``path``: ``kexue.<sub>`` as ``<sub>``, others by their first component."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]  # e.g. ("kexue", "ops", "ot")
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the file's package
                base = package[: len(package) - node.level + 1]
                modules = [".".join([*base, node.module] if node.module else base)]
                if not node.module:
                    modules = [f"{modules[0]}.{a.name}" for a in node.names]
            else:
                modules = [node.module]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            names.add(parts[1] if parts[0] == "kexue" and len(parts) > 1 else parts[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_down(layer):
    root = SRC / layer
    files = sorted(root.rglob("*.py")) if root.is_dir() else []
    violations = [f"{f.relative_to(SRC)} imports {bad}" for f in files for bad in _imports(f) & FORBIDDEN[layer]]
    assert not violations, "\n".join(violations)


def test_the_checker_sees_violations(tmp_path, monkeypatch):
    fake = tmp_path / "kexue" / "ops"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from ..train import seed\nimport matplotlib.pyplot\nfrom kexue.eval import x\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "kexue")
    assert _imports(fake / "bad.py") == {"train", "matplotlib", "eval"}


def test_import_kexue_is_light():
    heavy = ("matplotlib", "kexue.experiments", "scipy")
    code = f"import sys, kexue; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
