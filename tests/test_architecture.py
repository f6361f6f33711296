"""The package structure stays as designed: imports run one way (core <- domains <- agents <- experiment; nn and
report import none of them), checked by import-linter against the contracts in pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports (import-linter, a dev dependency) is not installed: pip install -e '.[dev]'")
    r = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_every_package_says_what_it_may_import():
    for init in sorted((ROOT / "dreamalloc").glob("*/__init__.py")):
        doc = init.read_text().split('"""')
        assert len(doc) >= 3 and len(doc[1]) > 80, f"{init.relative_to(ROOT)} has no module docstring"
        assert "may import" in doc[1].lower(), f"{init.relative_to(ROOT)}'s docstring does not say what it may import"
