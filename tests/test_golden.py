"""Golden runs: every agent on every env family, a small training + evaluation run whose metrics must match the
record in tests/golden/ (made before the batched-core redesign; ``python scripts/golden_runs.py --write`` re-records
them when a change of numbers is intended, and says so in the commit). Integers and keys must be equal; floats
equal to 1e-6 relative (the script reports byte-for-byte identity on the machine that recorded them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("golden_runs", ROOT / "scripts" / "golden_runs.py")
golden = importlib.util.module_from_spec(_spec)
sys.modules["golden_runs"] = golden
_spec.loader.exec_module(golden)


@pytest.mark.parametrize("name", list(golden.CASES) + list(golden.META_CASES))
def test_run_matches_its_golden_record(name, tmp_path):
    record = golden.run_meta_case(name) if name in golden.META_CASES else golden.run_case(name, tmp_path)
    expected = (golden.GOLDEN / f"{name}.jsonl").read_text()
    problems = golden.compare(expected, record, rel=1e-6)
    assert not problems, f"{name} differs from tests/golden/{name}.jsonl:\n" + "\n".join(problems[:5])


def test_compare_finds_a_changed_number_and_a_missing_line():
    a = '{"step": 1, "x": 0.5}\n{"step": 2, "x": 1.0}\n'
    assert golden.compare(a, a) == []
    assert golden.compare(a, a.replace("0.5", "0.5000000001")) == []  # within 1e-9 relative
    assert golden.compare(a, a.replace("0.5", "0.51"))
    assert golden.compare(a, a.splitlines(True)[0])
    assert golden.compare(a, a.replace('"step": 2', '"step": 3'))
