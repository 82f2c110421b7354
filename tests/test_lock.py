"""requirements.lock: the exact stack install.sh installs, in step with pyproject's ranges."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)")


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = PIN.match(line)
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = [Requirement(r) for r in [*project["dependencies"], *extras["platform"], *extras["test"]]]
    return [r for r in declared if r.name != project["name"]]  # the test extra names the platform extra


def test_the_installed_stack_is_the_locked_one():
    """A fresh ./install.sh installs exactly the lock's versions (a stale venv or a pip that
    re-resolved a range would show up here as a list of differences)."""
    pins = _locked()
    assert len(pins) > 100  # the whole resolved stack, not a hand-written list of direct deps
    wrong = {}
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from requirements.lock (locked, installed): {wrong}"


def test_every_declared_dependency_is_locked_within_its_range():
    """pyproject's ranges (for library users) and the lock (for install.sh) cannot drift apart:
    after a range changes, `pip-compile` must run again."""
    pins = _locked()
    for req in _declared():
        name = canonicalize_name(req.name)
        if name == "torch":
            assert name not in pins  # left out so a CUDA build installed first is kept
            continue
        assert name in pins, f"{req.name} is in pyproject.toml but not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])


def test_the_lock_pulls_no_cuda_packages_and_pytest_is_only_a_test_dependency():
    pins = _locked()
    assert not [n for n in pins if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
    runtime = {canonicalize_name(Requirement(r).name)
               for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert "pytest" not in runtime and "pytest" in pins
