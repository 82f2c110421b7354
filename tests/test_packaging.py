"""One installed name: ``promptinit``. The platform's folders (search/, trainables/, spaces/,
analysis/) stay at the repository root and install as ``promptinit.search`` and so on; the core
library imports without the platform's libraries (Ray, MLflow, Optuna: the ``platform`` extra)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"promptinit": "promptinit", "search": "promptinit.search", "trainables": "promptinit.trainables",
          "spaces": "promptinit.spaces", "analysis": "promptinit.analysis"}
# Refuses the platform's libraries, as an environment without the `platform` extra would.
BLOCK = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'mlflow', 'optuna'):
            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)')
sys.meta_path.insert(0, Absent())
"""


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_installs_under_the_promptinit_name():
    setuptools = _pyproject()["tool"]["setuptools"]
    expected = set()
    for folder, name in FLOORS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            expected.add(".".join((name, *rel)))
    assert set(setuptools["packages"]) == expected
    assert {k: v for k, v in setuptools["package-dir"].items()} == {n: f for f, n in FLOORS.items() if f != n}


def test_the_core_library_imports_without_ray_mlflow_and_optuna():
    code = BLOCK + (
        "import promptinit.evaluation, promptinit.export, promptinit.batched, promptinit.methods, promptinit.cli\n"
        "promptinit.cli.build_parser().parse_args(['tune', '--task', 'x'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow', 'optuna'))\n"
        "assert not bad, bad\n"
        "try:\n    import ray\nexcept ModuleNotFoundError:\n    print('blocked')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert r.returncode == 0 and r.stdout.strip().endswith("blocked"), r.stderr[-2000:]


def test_the_platform_libraries_are_an_extra_not_core_dependencies():
    project = _pyproject()["project"]
    core = " ".join(project["dependencies"])
    for lib in ("ray", "mlflow", "optuna"):
        assert lib not in core
        assert any(d.startswith(lib) for d in project["optional-dependencies"]["platform"])


def test_sweep_script_runs_from_any_folder_without_editing_sys_path():
    script = ROOT / "search" / "sweep.py"
    assert "sys.path" not in script.read_text() and "sys.path" not in (ROOT / "search" / "study.py").read_text()
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300, cwd="/")
    assert r.returncode == 0 and "--resume" in r.stdout and "-q" in r.stdout, r.stderr[-2000:]


def test_the_platform_without_its_extra_says_how_to_install_it(monkeypatch):
    import pytest

    from promptinit import extras

    monkeypatch.setattr(extras, "find_spec", lambda name: None if name == "optuna" else object())
    with pytest.raises(ImportError, match=r"promptinit.search needs optuna .*pip install 'promptinit\[platform\]'"):
        extras.require_platform("promptinit.search")
    monkeypatch.setattr(extras, "find_spec", lambda name: object())
    extras.require_platform("promptinit.search")  # all there: nothing to say
