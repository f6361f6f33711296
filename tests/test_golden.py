"""Golden runs: every agent on every env family, a small training + evaluation run whose metrics must match the
record in tests/golden/ (made before the batched-core redesign; ``python scripts/golden_runs.py --write`` re-records
them when a change of numbers is intended, and says so in the commit). Integers and keys must be equal; floats
equal to 1e-6 relative, training diagnostics (losses, KL, values) to golden_runs.DIAG_ABS / DIAG_REL since the last
bits of float arithmetic differ between CPUs (the script reports byte-for-byte identity on the machine that recorded
them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from script_module import load_script

ROOT = Path(__file__).resolve().parents[1]
golden = load_script("golden_runs")


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


def test_compare_allows_cpu_noise_in_training_diagnostics_only():
    """A loss or KL may differ in its last bits between CPUs (and grow a little through updates); a return, an
    episode count or an evaluation number may not, nor a diagnostic by more than DIAG_ABS and DIAG_REL."""
    line = '{"step": 8, "trials": 2, "return": 4.5, "approx_kl": 5.4575e-07, "loss": 13.0}\n'
    assert golden.compare(line, line.replace("5.4575e-07", "5.4608e-07"), rel=1e-6) == []
    assert golden.compare(line, line.replace("13.0", "13.0025"), rel=1e-6) == []
    assert golden.compare(line, line.replace("13.0", "13.5"), rel=1e-6)  # a real change of the loss
    assert golden.compare(line, line.replace("4.5", "4.5001"), rel=1e-6)  # returns stay strict (1e-6)
    assert golden.compare(line, line.replace('"trials": 2', '"trials": 3'), rel=1e-6)
    evaluation = '{"park": {"returns": [[-7.1562]]}}\n'
    assert golden.compare(evaluation, evaluation.replace("7.1562", "7.1563"), rel=1e-6)
