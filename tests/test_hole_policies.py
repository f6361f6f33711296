"""scripts/hole_policies.py: hand-written hole-space policies through the evaluation harness."""

from __future__ import annotations

from pathlib import Path

import pytest
from script_module import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "hole_policies.py"


def _script():
    return load_script("hole_policies")


def test_best_hole_is_best_fit_and_top_policy_places_differently(tmp_path):
    """With holes listed shortest first, always taking hole 0 is best fit: the same return as the rule on every
    held-out set of the suite, to the last digit; the two-ends policy plays other moves."""
    rows = _script().main(["--suite", "shift_lifetimes", "--cells", "256", "--trials", "1", "--policies", "best",
                           "top:0.02", "--json", str(tmp_path / "rows.json")])
    best = [r for r in rows if r["policy"] == "best"]
    top = [r for r in rows if r["policy"] == "top:0.02"]
    assert {r["set"] for r in best} == {"ranges", "families", "shifts", "traces"} and len(top) == len(best)
    for r in best:
        assert r["return"] == pytest.approx(r["rule_best"], abs=1e-9)
        assert r["best_rule_return"] == max(r[f"rule_{k}"] for k in ("best", "worst", "first", "next", "second"))
        assert r["best_rule_return"] <= r["rule_per_task"] + 1e-9
    assert any(abs(t["return"] - b["return"]) > 1e-6 for t, b in zip(top, best, strict=True))
    assert (tmp_path / "rows.json").stat().st_size > 100


def test_bad_policy_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit):
        _script().main(["--policies", "middle:0.1"])
    assert "policy 'middle:0.1'" in capsys.readouterr().err
