"""The layering contract (pyproject.toml, docs/architecture.md) holds, and no module imports itself
back through others (no import cycle, including imports inside functions)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint_imports() -> str | None:
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.exists() else shutil.which("lint-imports")


def test_import_layers_contract_is_kept():
    exe = _lint_imports()
    if exe is None:
        pytest.skip("import-linter is not installed (pip install import-linter; `make test` installs it)")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    got = subprocess.run([exe, "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True,
                         text=True, env=env, timeout=300)
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-2000:]
    assert "1 kept, 0 broken" in got.stdout


def test_no_import_cycles_between_modules():
    import grimp  # installed with import-linter (the test extra)
    graph = grimp.build_graph("retina_unet")
    modules = sorted(m for m in graph.modules if m.startswith("retina_unet"))
    packages = {m for m in modules if (REPO / m.replace(".", "/") / "__init__.py").is_file()}
    # a package's __init__ re-exporting its modules is not a cycle of code; look at plain modules
    edges = {m: {t for t in graph.find_modules_directly_imported_by(m) if t.startswith("retina_unet")
                 and t not in packages} for m in modules if m not in packages}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            visit(t)
        stack.pop()

    for m in edges:
        visit(m)
    assert cycles == []
