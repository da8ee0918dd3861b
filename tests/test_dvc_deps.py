"""dvc.yaml: each stage depends on exactly the package code its command runs (its import closure)."""
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from llseg import repro

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_code_deps_are_the_import_closure_of_its_command(stage):
    body = STAGES[stage].get("do", STAGES[stage])  # a foreach stage: its template, once
    want = repro.command_code_deps(body["cmd"], root=ROOT)
    listed = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
    missing = [d for d in want if d not in listed]
    extra = [d for d in listed if d.startswith("llseg/") and d.endswith(".py") and d not in want]
    assert not missing and not extra, (
        f"dvc.yaml stage {stage!r}: code deps differ from the import closure of `{' '.join(body['cmd'].split())[:70]}`; "
        f"missing {missing or 'none'}, extra {extra or 'none'} (fix: python -m llseg.repro --sync-deps)")


def _toy(tmp_path):
    """A package with a CLI, a notebook and a dvc.yaml whose code deps are wrong."""
    pkg = tmp_path / "llseg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "cli.py": """
            from . import base
            def _helper():
                from .sub import deep
            def cmd_a(args):
                from . import alpha
                _helper()
            def cmd_b(args):
                import llseg.beta
            def main():
                pass
            def build_parser():
                def add(name, func):
                    pass
                add("a", cmd_a)
                add("b", cmd_b)
            """,
        "base.py": "",
        "alpha.py": "def f():\n    from .sub.deep import g\n",
        "beta.py": "from llseg.base import thing\n",
        "sub/__init__.py": "",
        "sub/deep.py": "from .. import gamma\n",
        "gamma.py": "",
        "unused.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    nb = {"cells": [{"cell_type": "markdown", "source": "from llseg import unused"},
                    {"cell_type": "code", "source": ["%matplotlib inline\n", "from llseg import beta\n"]}]}
    (tmp_path / "nb.ipynb").write_text(json.dumps(nb))
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          a:  # runs cmd_a
            cmd: llseg a --x 1
            deps:
            - data  # not code: kept
            - llseg/cli.py
            - llseg/unused.py
          b:
            foreach: [1, 2]
            do:
              cmd: >-
                mkdir -p out &&
                papermill nb.ipynb out/${item}.ipynb
              deps:
              - llseg/beta.py
          c:
            cmd: llseg b
        """))
    return tmp_path


def test_closure_follows_helpers_function_imports_and_packages(tmp_path):
    root = _toy(tmp_path)
    got = repro.stage_code_deps(root / "dvc.yaml")
    assert got["a"] == ["llseg/__init__.py", "llseg/alpha.py", "llseg/base.py", "llseg/cli.py", "llseg/gamma.py",
                        "llseg/sub/__init__.py", "llseg/sub/deep.py"]
    assert got["b"] == ["nb.ipynb", "llseg/__init__.py", "llseg/base.py", "llseg/beta.py"]
    assert got["c"] == ["llseg/__init__.py", "llseg/base.py", "llseg/beta.py", "llseg/cli.py"]


def test_sync_deps_reports_then_fixes_keeping_comments(tmp_path, capsys):
    root = _toy(tmp_path)
    path = root / "dvc.yaml"
    assert repro._main([str(path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "a: missing llseg/__init__.py" in out and "extra llseg/unused.py" in out
    assert repro._main([str(path), "--sync-deps"]) == 0
    text = path.read_text()
    assert "# runs cmd_a" in text and "# not code: kept" in text and "llseg/unused.py" not in text
    stages = yaml.safe_load(text)["stages"]
    assert stages["a"]["deps"][0] == "data"
    assert stages["b"]["do"]["deps"] == ["nb.ipynb", "llseg/__init__.py", "llseg/base.py", "llseg/beta.py"]
    assert stages["c"]["deps"] == ["llseg/__init__.py", "llseg/base.py", "llseg/beta.py", "llseg/cli.py"]
    assert repro.code_deps_diff(path) == {}
    assert repro._main([str(path), "--check"]) == 0


def test_an_import_of_a_missing_module_names_the_importer(tmp_path):
    root = _toy(tmp_path)
    (root / "llseg" / "alpha.py").write_text("from . import moved\n")
    with pytest.raises(ValueError, match=r"llseg/alpha.py: imports llseg.moved, but there is no llseg/moved.py"):
        repro.stage_code_deps(root / "dvc.yaml")
    with pytest.raises(ValueError, match="no handler registered for `llseg nope`"):
        repro.command_code_deps("llseg nope", root=root)
