"""The three layers: the method core (llseg/*.py) imports neither llseg.phantom nor llseg.study;
the phantom imports nothing of the method beyond anatomy, _validate and io."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "llseg"
EDGE = {"cli.py", "repro.py"}  # the edge may use every layer


def _imported_llseg_modules(path: Path) -> set[str]:
    """Dotted llseg modules a file imports anywhere (module level or inside functions)."""
    package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("llseg")}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            if node.module is None or node.level:
                found |= {f"{mod}.{a.name}" if node.module is None else mod for a in node.names}
            elif mod.startswith("llseg"):  # from llseg import io: the names may be modules
                found |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("path", sorted(p for p in PKG.glob("*.py") if p.name not in EDGE), ids=lambda p: p.name)
def test_core_imports_neither_phantom_nor_study(path):
    bad = {m for m in _imported_llseg_modules(path) if m.startswith(("llseg.phantom", "llseg.study"))}
    assert not bad, f"{path.name} (core) imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted((PKG / "phantom").glob("*.py")), ids=lambda p: p.name)
def test_phantom_knows_nothing_of_the_method(path):
    allowed = {"llseg", "llseg.anatomy", "llseg._validate", "llseg.io"}
    bad = {m for m in _imported_llseg_modules(path) if not m.startswith("llseg.phantom") and m not in allowed}
    assert not bad, f"phantom/{path.name} imports {sorted(bad)}"


def test_the_import_scan_sees_every_import_form(tmp_path):
    pkg = tmp_path / "llseg" / "study"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("from .. import io\nfrom .figures import f\nfrom llseg import anatomy\n"
                              "def g():\n    import llseg.phantom.mrsim\n")
    global PKG
    saved, PKG = PKG, tmp_path / "llseg"
    try:
        found = _imported_llseg_modules(pkg / "x.py")
    finally:
        PKG = saved
    assert {"llseg.io", "llseg.study.figures", "llseg.anatomy", "llseg.phantom.mrsim"} <= found
