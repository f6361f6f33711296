"""The reporting layer: results.json contract, tables, pictures and scripts/compare.py, on hand-built results."""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from scipy import stats
from script_module import load_script

from dreamalloc.report import (
    CI_NOTE_SEEDS,
    adaptation_rows,
    compare_curves,
    compare_rows,
    episode_curve,
    latest_per_run,
    load_results,
    markdown_table,
    results_table,
    save_results,
    write_csv,
)
from dreamalloc.report.plots import FREE_COLOUR, PALETTE, plot_adaptation, plot_heap_timeline, plot_memory_map

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def t_interval(x):
    """The reference 95 % interval, computed directly (not through mean_ci)."""
    x = np.asarray(x, dtype=np.float64)
    m = x.mean()
    if x.size == 1:
        return m, m, m
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return m, m - half, m + half


def make_results(returns, method="ppo", seed=0, step=1000, task="mixed", set_name="heldout", suite="lim2024",
                 rule="best", hindsight_offset=1.0, bound=50.0):
    """A valid results dict around one [trials][K] return matrix; metrics derived so their means are known."""
    r = np.asarray(returns, dtype=np.float64)
    return {
        "schema": 1, "method": method, "seed": seed, "suite": suite, "step": step, "episodes_per_trial": r.shape[1],
        "sets": {set_name: {"tasks": {task: {
            "returns": r.tolist(),
            "metrics": {"frag_largest": (r / 100).tolist(), "allocations": (r * 10).tolist()},
            "hindsight_best": {"rule": rule, "returns": (r + hindsight_offset).tolist()},
            "capacity_bound": np.full_like(r, bound).tolist(),
        }}}},
    }


# ----------------------------------------------------------------------------------------------- tables


def test_episode_curve_matches_scipy():
    rng = np.random.default_rng(0)
    r = rng.normal(5, 2, size=(7, 4))
    curve = episode_curve(r.tolist())
    assert len(curve) == 4
    for j, (m, lo, hi) in enumerate(curve):
        em = r[:, j].mean()
        elo, ehi = stats.t.interval(0.95, df=6, loc=em, scale=stats.sem(r[:, j]))
        assert (m, lo, hi) == pytest.approx((em, elo, ehi), rel=1e-12)


def test_episode_curve_single_trial_collapses_and_rejects_bad_shape():
    assert episode_curve([[1.0, 2.0]]) == [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0)]
    with pytest.raises(ValueError, match="trials"):
        episode_curve([1.0, 2.0])


def test_results_table_rows_by_hand():
    res = make_results([[1, 2, 3], [3, 4, 5]], rule="worst", hindsight_offset=0.5, bound=40)
    res["sets"]["heldout"]["tasks"]["wf-good"] = _task(make_results([[2, 2, 2], [2, 2, 2]]))
    rows = results_table(res)
    assert [(r["set"], r["task"]) for r in rows] == [("heldout", "mixed"), ("heldout", "wf-good")]
    row = rows[0]
    assert (row["method"], row["seed"], row["step"], row["trials"], row["episodes"]) == ("ppo", 0, 1000, 2, 3)
    half = stats.t.ppf(0.975, 1) * np.std([2, 4], ddof=1) / np.sqrt(2)  # per-trial means are 2 and 4
    assert row["return"] == pytest.approx((3, 3 - half, 3 + half))
    assert row["first_ep"] == pytest.approx(t_interval([1, 3]))
    assert row["last_ep"] == pytest.approx(t_interval([3, 5]))
    assert row["frag_largest"] == pytest.approx(0.03) and row["allocations"] == pytest.approx(30)
    assert row["hindsight_rule"] == "worst" and row["hindsight_best"] == pytest.approx(3.5)
    assert row["capacity_bound"] == pytest.approx(40)
    assert rows[1]["return"] == pytest.approx((2, 2, 2))  # no spread: zero-width interval


def test_markdown_table_format():
    rows = [{"method": "ppo", "return": (12.3399, 11.9, 12.781), "n": 3, "x": 1.005, "note": "a|b"},
            {"method": "heuristic:best", "return": (1.0, 1.0, 1.0), "n": 10}]
    md = markdown_table(rows, ["method", "return", "n", "x", "note"])
    lines = md.splitlines()
    assert len(lines) == 4 and all(line.startswith("| ") and line.endswith(" |") for line in lines[::2] + lines[3:])
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["method", "return", "n", "x", "note"]
    seps = lines[1].strip("|").split("|")
    assert seps[0].strip("-") == "" and seps[1].endswith(":") and seps[2].endswith(":")  # numbers right-aligned
    cells = [c.strip() for c in lines[2][2:-2].split(" | ")]
    assert cells == ["ppo", "12.34 [11.90, 12.78]", "3", "1.00", "a\\|b"]  # | escaped, 2 decimals
    assert "1.00 [1.00, 1.00]" in lines[3] and lines[3].rstrip().endswith("|")
    assert len({len(line) for line in lines}) == 1  # padded: aligned in a terminal too
    assert "12.340 [11.900, 12.781]" in markdown_table(rows, ["return"], digits=3)


def test_csv_round_trip(tmp_path):
    res = make_results([[1.0, 2.5, 3.25], [0.1, 4.0, 5.0], [2.0, 2.0, 9.0]])
    rows = results_table(res)
    path = write_csv(rows, tmp_path / "sub" / "t.csv")
    with path.open() as f:
        back = list(csv.DictReader(f))
    assert len(back) == 1
    got, want = back[0], rows[0]
    for key in ("return", "first_ep", "last_ep"):
        assert [float(got[key]), float(got[f"{key}_low"]), float(got[f"{key}_high"])] == list(want[key])  # exact
    for key in ("frag_largest", "allocations", "hindsight_best", "capacity_bound"):
        assert float(got[key]) == want[key]
    assert (got["set"], got["task"], got["method"], got["hindsight_rule"]) == ("heldout", "mixed", "ppo", "best")
    assert int(got["trials"]) == 3 and int(got["seed"]) == 0


# --------------------------------------------------------------------------------------- results.json


def _write(tmp_path, data, name="results.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def _task(d):
    return d["sets"]["heldout"]["tasks"]["mixed"]


BAD = {
    "missing seed": (lambda d: d.pop("seed"), r"seed: missing"),
    "missing capacity bound": (lambda d: _task(d).pop("capacity_bound"),
                               r"sets\.heldout\.tasks\.mixed\.capacity_bound: missing"),
    "missing rule": (lambda d: _task(d)["hindsight_best"].pop("rule"), r"hindsight_best\.rule: missing"),
    "wrong schema": (lambda d: d.update(schema=2), r"schema: is 2"),
    "unequal rows": (lambda d: _task(d)["returns"][1].pop(), r"tasks\.mixed\.returns: trial 1 has 2 episodes"),
    "K mismatch": (lambda d: d.update(episodes_per_trial=4), r"returns: trial 0 has 3 episodes, expected"),
    "metric trials": (lambda d: _task(d)["metrics"]["frag_largest"].pop(), r"metrics\.frag_largest: has 1 trials"),
    "not a number": (lambda d: _task(d)["returns"][0].__setitem__(0, "7"), r"trial 0 episode 0 is '7'"),
    "seed type": (lambda d: d.update(seed="0"), r"seed: is '0', expected an integer"),
    "no sets": (lambda d: d.update(sets={}), r"sets: must be a non-empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_load_results_names_file_and_field(tmp_path, case):
    data = make_results([[1, 2, 3], [4, 5, 6]])
    mutate, pattern = BAD[case]
    mutate(data)
    p = _write(tmp_path, data)
    with pytest.raises(ValueError, match=pattern) as e:
        load_results(p)
    assert str(e.value).startswith(str(p))


def test_load_results_malformed_json(tmp_path):
    p = tmp_path / "results.json"
    p.write_text('{"schema": 1, "method": ')
    with pytest.raises(ValueError, match="malformed JSON") as e:
        load_results(p)
    assert str(p) in str(e.value)


def test_save_results_atomic_and_round_trip(tmp_path, monkeypatch):
    data = make_results([[1, 2, 3], [4, 5, 6]])
    data["sets"]["heldout"]["tasks"]["mixed"]["returns"] = np.array([[1.0, 2, 3], [4, 5, 6]])  # numpy accepted
    path = tmp_path / "eval" / "results.json"
    save_results(path, data)
    assert os.listdir(path.parent) == ["results.json"]  # no temp file left
    assert load_results(path) == json.loads(json.dumps(make_results([[1, 2, 3], [4, 5, 6]])))

    # a crash between writing and renaming leaves the old file intact and no temp file behind
    def boom(*a):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        save_results(path, make_results([[9, 9, 9]]))
    monkeypatch.undo()
    assert os.listdir(path.parent) == ["results.json"]
    assert load_results(path)["sets"]["heldout"]["tasks"]["mixed"]["returns"][0] == [1, 2, 3]

    bad = make_results([[1, 2, 3]])
    del bad["method"]
    with pytest.raises(ValueError, match="method: missing"):  # invalid results are never written
        save_results(tmp_path / "other" / "results.json", bad)
    assert not (tmp_path / "other").exists()


def test_latest_per_run_keeps_largest_step_and_rejects_ties(tmp_path):
    a, b, c = (make_results([[float(s)] * 2], step=s) for s in (100, 300, 200))
    kept = latest_per_run([(Path("a"), a), (Path("b"), b), (Path("c"), c)])
    assert [r["step"] for _, r in kept] == [300]
    with pytest.raises(ValueError, match="two evaluations.*step 100: a and d"):
        latest_per_run([(Path("a"), a), (Path("d"), copy.deepcopy(a))])


# -------------------------------------------------------------------------------------------- pictures


def _pixels(path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    img = matplotlib.image.imread(path)[..., :3]  # [H, W, 3] floats in [0, 1]
    return img.reshape(-1, 3)


def _has_colour(px, rgb, tol=0.02):
    return bool(np.any(np.all(np.abs(px - np.asarray(rgb)[:3]) < tol, axis=1)))


def _chromatic(px):
    return np.ptp(px, axis=1) > 0.1  # clearly coloured, not white / grey / black text


def test_memory_map_all_free_is_grey_and_blocks_keep_their_colour(tmp_path):
    px = _pixels(plot_memory_map(np.full(100, -1), tmp_path / "free.png", "all free"))
    assert not _chromatic(px).any()
    assert _has_colour(px, FREE_COLOUR)

    before = np.full(100, -1)
    before[5:15], before[40:55] = 0, 3
    after = before.copy()
    after[15:20] = 21  # 21 wraps onto the palette: 21 % 18 = 3, same colour as block 3
    px = _pixels(plot_memory_map({"before": before, "after": after}, tmp_path / "two.png", "before/after"))
    assert _has_colour(px, PALETTE[0]) and _has_colour(px, PALETTE[3]) and _has_colour(px, FREE_COLOUR)
    assert not _has_colour(px, PALETTE[1])  # no colour for a block that is not there
    assert not (np.ptp(PALETTE, axis=1) < 0.05).any()  # no grey in the palette: a block never looks free


def test_heap_timeline_colours(tmp_path):
    owner = np.full((30, 64), -1)
    for t in range(30):
        owner[t, : 2 * t] = np.arange(2 * t) // 8  # blocks 0..7 grow into the heap
    px = _pixels(plot_heap_timeline(owner, tmp_path / "tl.png", "timeline"))
    for b in range(7):
        assert _has_colour(px, PALETTE[b])
    assert _has_colour(px, FREE_COLOUR) and not _has_colour(px, PALETTE[9])
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        plot_heap_timeline(np.zeros(5, int), tmp_path / "x.png")


def test_plot_adaptation_draws_each_method(tmp_path):
    curves = {"ppo": episode_curve([[1, 2, 3], [2, 3, 5]]), "rl2_ppo": [(1.0, 0.5, 1.5), (2.0, 1.0, 3.0)]}
    px = _pixels(plot_adaptation(curves, tmp_path / "a.png", "adaptation"))
    assert _has_colour(px, (0.122, 0.467, 0.706))  # first line: matplotlib C0
    assert _has_colour(px, (1.0, 0.498, 0.055))  # second line: C1


# ------------------------------------------------------------------------------------- compare.py


def _run_dirs(tmp_path):
    """Two run folders (ppo, rl2_ppo), two seeds each; the ppo seeds were also evaluated at an earlier step."""
    rng = np.random.default_rng(1)
    truth = {}
    for method, base in (("ppo", 5.0), ("rl2_ppo", 8.0)):
        for seed in (0, 1):
            r = base + rng.normal(0, 1, size=(4, 3)) + np.arange(3)  # rises within a trial
            truth[method, seed] = r
            run = tmp_path / method / f"seed{seed}" / "eval"
            save_results(run / "step_2000" / "results.json", make_results(r, method, seed, step=2000))
            if method == "ppo":  # an earlier, much worse evaluation that must be ignored
                save_results(run / "step_1000" / "results.json", make_results(r - 100, method, seed, step=1000))
    return truth


def _cells(table, method):
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip()[1:-1].split("|")]
        if cells[0] == method:
            return cells
    raise AssertionError(f"no row for {method} in\n{table}")


def test_compare_end_to_end(tmp_path):
    truth = _run_dirs(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), str(tmp_path / "ppo"),
                        str(tmp_path / "rl2_ppo"), "--out", str(out), "--markdown"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    header = [c.strip() for c in p.stdout.splitlines()[0].strip()[1:-1].split("|")]
    assert header[:9] == ["label", "method", "set", "task", "n_seeds", "step", "return", "first_ep", "last_ep"]
    for method in ("ppo", "rl2_ppo"):
        seeds = [truth[method, s] for s in (0, 1)]
        cells = _cells(p.stdout, method)
        assert cells[1:6] == [method, "heldout", "mixed", "2", "2000"]  # no label in these files: the method
        assert cells[6] == "{:.2f} [{:.2f}, {:.2f}]".format(*t_interval([r.mean() for r in seeds]))
        assert cells[7] == "{:.2f} [{:.2f}, {:.2f}]".format(*t_interval([r[:, 0].mean() for r in seeds]))
        assert cells[8] == "{:.2f} [{:.2f}, {:.2f}]".format(*t_interval([r[:, -1].mean() for r in seeds]))
        assert cells[9] == "best" and float(cells[10]) == pytest.approx(np.mean(seeds) + 1, abs=0.006)
        assert cells[11] == "50.00"
    assert p.stdout.rstrip().endswith(CI_NOTE_SEEDS)  # the interval method under the table
    assert (out / "compare.md").read_text() == p.stdout
    with (out / "compare.csv").open() as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    want = t_interval([truth["rl2_ppo", s].mean() for s in (0, 1)])
    got = [float(rows["rl2_ppo"][k]) for k in ("return", "return_low", "return_high")]
    assert got == pytest.approx(want, rel=1e-12)
    assert rows["ppo"]["seeds"] == "0 1"
    assert (out / "adaptation_heldout_mixed.png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.fixture(scope="module")
def compare_main():
    mod = load_script("compare")
    return mod.main


def test_compare_one_seed_is_n_a(tmp_path, capsys, compare_main):
    r = np.array([[1.0, 2.0], [3.0, 5.0]])
    f = save_results(tmp_path / "run" / "results.json", make_results(r, "dqn", seed=3))
    assert compare_main([str(f), "--out", str(tmp_path / "o"), "--markdown"]) == 0
    cells = _cells(capsys.readouterr().out, "dqn")
    assert cells[4] == "1" and cells[6] == "2.75 [n/a]" and cells[7] == "2.00 [n/a]"  # no interval from 1 seed


def test_compare_errors_name_the_path(tmp_path, capsys, compare_main):
    (tmp_path / "empty_run").mkdir()
    assert compare_main([str(tmp_path / "empty_run"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty_run") in err and "no results.json" in err

    bad = tmp_path / "bad_run" / "eval" / "results.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    assert compare_main([str(tmp_path / "bad_run"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "malformed JSON" in err
    assert "Traceback" not in err


def test_compare_curves_across_seeds():
    a, b = np.array([[1.0, 3.0], [3.0, 5.0]]), np.array([[2.0, 2.0]])  # seed curves (2, 4) and (2, 2)
    found = [make_results(a, seed=0), make_results(b, seed=1), make_results([[1.0, 1.0, 1.0]], "odd", seed=0),
             make_results([[1.0, 1.0]], "odd", seed=1)]
    curves, warnings = compare_curves(found)
    (m0, lo0, hi0), (m1, lo1, hi1) = curves["lim2024", "heldout", "mixed"]["ppo"]
    assert (m0, lo0, hi0) == (2.0, 2.0, 2.0)
    assert (m1, lo1, hi1) == pytest.approx(t_interval([4.0, 2.0]))
    assert "odd" not in curves["lim2024", "heldout", "mixed"] and "'odd'" in warnings[0]
    rows = compare_rows(found[:2])
    assert rows[0]["return"] == pytest.approx(t_interval([a.mean(), b.mean()]))  # seed means, not pooled episodes


def test_adaptation_rows_pool_tasks_per_set_and_overall():
    res = make_results([[1, 2, 3], [1, 2, 3], [2, 2, 4]], set_name="a")
    res["sets"]["a"]["tasks"]["other"] = _task(make_results([[1, 1, 1], [3, 3, 3]]))
    res["sets"]["b"] = {"tasks": {"flat": _task(make_results([[2, 2, 2], [2, 2, 2]]))}}
    rows = {r["set"]: r for r in adaptation_rows(res)}
    assert list(rows) == ["a", "b", "all"]
    a = rows["a"]
    assert (a["trials"], a["episodes"], a["method"]) == (5, 3, "ppo")
    assert a["first_ep"] == pytest.approx(t_interval([1, 1, 2, 1, 3]))
    assert a["last_ep"] == pytest.approx(t_interval([3, 3, 4, 1, 3]))
    assert a["gain"] == pytest.approx(t_interval([2, 2, 2, 0, 0]))
    assert rows["b"]["gain"] == pytest.approx((0, 0, 0)) and rows["b"]["adapts"] is False
    assert rows["all"]["trials"] == 7
    rising = make_results([[1, 5]] * 3 + [[2, 6]] * 3)
    assert [r["adapts"] for r in adaptation_rows(rising)] == [True]  # one set: no "all" row


def test_adaptation_script_prints_the_table(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import adaptation

    (tmp_path / "results.json").write_text(json.dumps(make_results([[1, 5], [2, 6], [1, 6], [2, 5]])))
    assert adaptation.main([str(tmp_path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| ppo" in out and "| True" in out and "4.00 [" in out
    assert adaptation.main([str(tmp_path / "missing")]) == 2


def test_dreamer_rl2_curves_plots_training_and_selection_series(tmp_path, capsys):
    """scripts/dreamer_rl2_curves.py reads the training curve or the model-selection scores, from an rl2_sanity
    JSON or a train.py run folder; a result without the asked-for series is one clear error, no picture."""
    mod = load_script("dreamer_rl2_curves")
    sanity = tmp_path / "b100.json"
    sanity.write_text(json.dumps({"curve": [[100, 50.0, 1.0], [200, 55.5, 2.0]],
                                  "selection": {"every": 100, "history": [[100, 51.0], [200, 57.25]]}}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 64, "train/return": -30.0}, {"step": 128, "select/return": -25.5, "select/best_return": -25.5},
        {"step": 192, "train/return": -28.0}, {"step": 256, "select/return": -24.0, "select/best_return": -24.0}]))
    assert mod.curve(sanity) == ([100, 200], [50.0, 55.5])
    assert mod.curve(sanity, "selection") == ([100, 200], [51.0, 57.25])
    assert mod.curve(run) == ([64, 192], [-30.0, -28.0])
    assert mod.curve(run, "selection") == ([128, 256], [-25.5, -24.0])
    out = tmp_path / "sel.png"
    assert mod.main(["--series", "selection", "--out", str(out), f"a={sanity}", f"b={run}"]) == 0
    assert matplotlib.image.imread(out).shape[0] > 100
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"curve": [[100, 50.0, 1.0]]}))
    bad = tmp_path / "bad.png"
    assert mod.main(["--series", "selection", "--out", str(bad), f"a={plain}"]) == 2
    assert "no selection scores" in capsys.readouterr().err and not bad.exists()
