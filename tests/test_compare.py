"""Comparing variants of one agent: a sweep's points are told apart by their label, its seeds merged."""

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from script_module import load_script

from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
from dreamalloc.experiment.training import run_label, train
from dreamalloc.report import CI_NOTE_SEEDS, find_results, latest_per_run, save_results, step_warnings
from dreamalloc.report.stats import mean_ci

ROOT = Path(__file__).resolve().parents[1]
TINY = ["env=alloc64", "env.num_envs=8", "eval.trials=2", "eval.episodes_per_trial=2", "eval.timeline=false",
        "logger=disabled", "progress=off", "agent=ppo", "agent.n_steps=16", "agent.batch_size=64"]


def _train(tmp_path: Path, point: list[str], seed: int, steps: int = 128) -> dict:
    overrides = [*point, f"seed={seed}", f"steps={steps}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=TINY + overrides)
    name = "_".join(o.replace("=", "-") for o in overrides)
    cfg.run_dir = str(tmp_path / "runs" / name)
    cfg.checkpoint_dir = str(tmp_path / "ckpt")
    return train(cfg, overrides)


def _compare(tmp_path, capsys, *args):
    mod = load_script("compare")
    code = mod.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_lr_sweep_compares_into_one_row_per_point(tmp_path, capsys):
    returns = {}
    for lr in ("0.001", "0.0003"):
        for seed in (0, 1):
            res = _train(tmp_path, [f"agent.lr={lr}"], seed)["results"]
            assert res["label"] == f"ppo__agent.lr-{lr}" and res["method"] == "ppo"
            returns[lr, seed] = np.mean(res["sets"]["lim2024"]["tasks"]["mixed"]["returns"])
    code, out, err = _compare(tmp_path, capsys, "--markdown")
    assert code == 0, err
    rows = [[c.strip() for c in line.strip()[1:-1].split("|")] for line in out.splitlines()
            if line.startswith("| ppo")]
    mixed = {r[0]: r for r in rows if r[3] == "mixed"}
    assert sorted(mixed) == ["ppo__agent.lr-0.0003", "ppo__agent.lr-0.001"]  # two rows, one per lr
    for lr in ("0.001", "0.0003"):
        row = mixed[f"ppo__agent.lr-{lr}"]
        assert row[1] == "ppo" and row[4] == "2" and row[5] == "128"  # 2 seeds merged, one step
        m, lo, hi = mean_ci([returns[lr, 0], returns[lr, 1]])
        assert row[6] == f"{m:.2f} [{lo:.2f}, {hi:.2f}]"
    assert CI_NOTE_SEEDS in out
    # no step warning (equal steps); runs of 128 steps log their metrics once: one line per label says so
    assert "differ in steps" not in err
    assert err.splitlines() == [f"compare: warning: lim2024 ppo__agent.lr-{lr}: none of its 2 runs logged training "
                                "metrics at two steps or more (metrics.jsonl; see logger.every), so it has no learning "
                                "curve" for lr in ("0.0003", "0.001")]

    # a third seed of one point trained longer: kept (3 seeds in its row, step range), and warned about
    _train(tmp_path, ["agent.lr=0.001"], 2, steps=256)
    code, out, err = _compare(tmp_path, capsys, "--markdown")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("| ppo__agent.lr-0.001 ") and "| mixed" in line)
    cells = [c.strip() for c in row.strip()[1:-1].split("|")]
    assert cells[4] == "3" and cells[5] == "128-256"
    assert "warning" in err and "'ppo__agent.lr-0.001'" in err and "differ in steps" in err
    assert "seed 2: 256" in err


def test_label_default_and_config_key():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=TINY + ["agent.lr=0.001", "seed=3"])
        named = compose("config", overrides=TINY + ["label=mine"])
    assert run_label(cfg, ["agent=ppo", "agent.lr=0.001", "seed=3", "steps=99", "eval.trials=2"]) == \
        "ppo__agent.lr-0.001"  # seed and evaluation / budget keys do not make another variant
    assert run_label(cfg, []) == "ppo"
    assert run_label(named, ["agent.lr=0.001", "label=mine"]) == "mine"


def _results(method, seed, step, label=None, value=1.0):
    r = {"schema": 1, "method": method, "seed": seed, "suite": "s", "step": step, "episodes_per_trial": 1,
         "sets": {"h": {"tasks": {"t": {"returns": [[value], [value + 1]], "metrics": {},
                                        "hindsight_best": {"rule": "best", "returns": [[0.0], [0.0]]},
                                        "capacity_bound": [[9.0], [9.0]]}}}}}
    if label is not None:
        r["label"] = label
    return r


def test_old_results_without_label_and_same_seed_runs_of_different_steps(tmp_path):
    old = save_results(tmp_path / "old" / "results.json", _results("dqn", 0, 100))
    assert "label" not in json.loads(old.read_text())
    # two runs (own folders) of one label and seed, at different steps: both kept, relabelled, warned
    a = save_results(tmp_path / "a" / "eval" / "step_000000000100" / "results.json", _results("ppo", 0, 100, "x"))
    a2 = save_results(tmp_path / "a" / "eval" / "step_000000000050" / "results.json", _results("ppo", 0, 50, "x"))
    b = save_results(tmp_path / "b" / "eval" / "step_000000000200" / "results.json", _results("ppo", 0, 200, "x"))
    warnings: list[str] = []
    kept = latest_per_run(find_results([tmp_path]), warnings)
    labels = sorted((r.get("label", r["method"]), r["step"]) for _, r in kept)
    assert labels == [("dqn", 100), ("x@100", 100), ("x@200", 200)]  # run a's step 50 is its earlier checkpoint
    assert {str(f) for f, _ in kept} == {str(old), str(a), str(b)} and str(a2) not in {str(f) for f, _ in kept}
    assert len(warnings) == 1 and "'x'" in warnings[0] and "different steps" in warnings[0]
    same = save_results(tmp_path / "c" / "eval" / "step_000000000200" / "results.json", _results("ppo", 0, 200, "x"))
    with pytest.raises(ValueError, match="same step"):
        latest_per_run(find_results([tmp_path / "b", same]))
    assert step_warnings([_results("p", 0, 1, "y"), _results("p", 1, 2, "y")])[0].startswith("'y'")
    assert step_warnings([_results("p", 0, 1, "y"), _results("p", 1, 1, "y")]) == []
    with pytest.raises(ValueError, match="label"):
        save_results(tmp_path / "bad.json", _results("p", 0, 1, ""))


def _fake_run(root: Path, label: str, seed: int, lines: list[dict]) -> None:
    run = root / f"{label}_s{seed}"
    (run / "eval" / "step_000000000300").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    save_results(run / "eval" / "step_000000000300" / "results.json", {
        "schema": 1, "method": "ppo", "label": label, "seed": seed, "suite": "lb_standard", "step": 300,
        "episodes_per_trial": 1, "sets": {"park": {"tasks": {"park": {
            "returns": [[-1.0], [-2.0]], "metrics": {"mean_job_time": [[10.0], [20.0]]}, "baselines": "off"}}}}})


def test_learning_curves_interpolate_seeds_onto_one_grid(tmp_path, capsys):
    """Two seeds logged at different steps: each is interpolated onto the common range (the later first step to
    the earlier last step) and the band is the t-interval across seeds; a metric one seed never logged is
    drawn from the other and warned about; compare.py draws learning_<suite>.png."""
    from dreamalloc.report.learning import learning_curves

    runs = tmp_path / "runs"
    _fake_run(runs, "a", 0, [{"step": 100, "train/return": -4.0, "train/mean_job_time": 40.0},
                             {"step": 300, "train/return": -2.0, "train/mean_job_time": 20.0}])
    _fake_run(runs, "a", 1, [{"step": 0, "train/return": -6.0}, {"step": 200, "train/return": -4.0},
                             {"step": 400, "train/return": -2.0}])
    curves, warnings = learning_curves(latest_per_run(find_results([runs])), ("mean_job_time",), points=3)
    steps, ret = curves["lb_standard"]["return"]["a"]
    assert steps.tolist() == [100.0, 200.0, 300.0]
    # seed 0 at 100/200/300: -4, -3, -2; seed 1: -5, -4, -3
    assert [c[0] for c in ret] == pytest.approx([-4.5, -3.5, -2.5])
    assert ret[0][1:] == pytest.approx(mean_ci([-4.0, -5.0])[1:])
    steps, mjt = curves["lb_standard"]["mean_job_time"]["a"]
    assert [c[0] for c in mjt] == pytest.approx([40.0, 30.0, 20.0])  # seed 0 only
    assert any("1 of 2 runs logged no train/mean_job_time" in w for w in warnings)
    code, _, err = _compare(tmp_path, capsys)
    assert code == 0 and (tmp_path / "out" / "learning_lb_standard.png").stat().st_size > 10_000
    assert "logged no train/mean_job_time" in err
    code, out, _ = _compare(tmp_path, capsys, "--markdown", "--metrics", "mean_job_time", "nothing")
    header, _, row = out.splitlines()[:3]
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")],
                     strict=True))
    assert code == 0 and cells["mean_job_time"] == "15.00 [15.00, 15.00]" and cells["nothing"] == ""


def _set_results(seed, values):
    """Two tasks in one held-out set; the agent's per-trial returns per task, the rules' per-task means fixed."""
    rules = {"a": {"first": 2.0, "best": 5.0}, "b": {"first": 4.0, "best": 1.0}}
    tasks = {t: {"returns": [[v], [v]], "metrics": {}, "heuristics": rules[t],
                 "hindsight_best": {"rule": max(rules[t], key=rules[t].get), "returns": [[max(rules[t].values())]] * 2},
                 "capacity_bound": [[10.0]] * 2} for t, v in zip(("a", "b"), values, strict=True)}
    return {"schema": 1, "method": "ppo", "label": "ppo", "seed": seed, "suite": "s", "step": 10,
            "episodes_per_trial": 1, "sets": {"h": {"tasks": tasks}}}


def test_set_table_compares_each_set_with_its_best_fixed_rule(tmp_path, capsys):
    """Per held-out set, a rule's return is its mean over the set's tasks (first: (2 + 4) / 2 = 3, best: (5 + 1) /
    2 = 3, although best wins task a), and the method beats the best of them where the seeds' interval of the
    difference lies above 0."""
    from dreamalloc.report.tables import set_rows

    rows = set_rows([_set_results(0, (4.0, 3.0)), _set_results(1, (4.5, 3.1)), _set_results(2, (4.2, 2.9))])
    (row,) = rows
    assert (row["set"], row["tasks"], row["n_seeds"]) == ("h", 2, 3)
    assert row["rule_first"] == 3.0 and row["rule_best"] == 3.0 and row["best_rule_return"] == 3.0
    per_seed = [3.5, 3.8, 3.55]
    assert row["return"] == pytest.approx(mean_ci(per_seed))
    assert row["vs_best_rule"] == pytest.approx(mean_ci([x - 3.0 for x in per_seed]))
    assert row["beats_best_rule"] and row["capacity_bound"] == 10.0
    assert row["rule_per_task"] == 4.5  # best on task a (5), first on task b (4)
    worse = set_rows([_set_results(0, (1.0, 6.0)), _set_results(1, (0.0, 5.0))])[0]  # 3.5 and 2.5: straddles 3
    assert not worse["beats_best_rule"]
    for i, res in enumerate([_set_results(0, (4.0, 3.0)), _set_results(1, (4.5, 3.1))]):
        save_results(tmp_path / "runs" / f"r{i}" / "eval" / "step_000000000010" / "results.json", res)
    code, out, err = _compare(tmp_path, capsys)
    assert code == 0, err
    assert "Per held-out set" in out and (tmp_path / "out" / "compare_sets.md").exists()
    header = (tmp_path / "out" / "compare_sets.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["suite", "label", "set"] and "rule_first" in header and "beats_best_rule" in header


def test_set_table_keeps_the_suites_order_of_sets():
    """Per-set and per-task rows come in the order the results list the sets (the suite's), not alphabetically."""
    from dreamalloc.report.tables import compare_rows, set_rows

    def two_sets(seed):
        res = _set_results(seed, (4.0, 3.0))
        res["sets"] = {"zeta": res["sets"]["h"], "alpha": copy.deepcopy(res["sets"]["h"])}
        return res

    assert [r["set"] for r in set_rows([two_sets(0), two_sets(1)])] == ["zeta", "alpha"]
    assert [(r["set"], r["task"]) for r in compare_rows([two_sets(0), two_sets(1)])] == [
        ("zeta", "a"), ("zeta", "b"), ("alpha", "a"), ("alpha", "b")]


def test_welch_interval_is_scipys_and_refuses_one_seed():
    from scipy import stats

    from dreamalloc.report.stats import welch_ci

    a, b = [1.0, 2.0, 3.5], [0.0, 0.4, 1.0, 0.2]
    d, lo, hi = welch_ci(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert d == pytest.approx(np.mean(a) - np.mean(b)) and (lo, hi) == pytest.approx((ref.low, ref.high))
    assert welch_ci([2.0, 2.0], [1.0, 1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        welch_ci([1.0], [1.0, 2.0])


def _labelled(label, seed, values):
    res = _set_results(seed, values)
    res["label"] = label
    return res


def test_versus_table_compares_two_methods_seed_groups_per_set(tmp_path, capsys):
    """--versus: per set, a label's seed means minus the reference's with Welch's interval; beats / behind only
    where the interval clears 0; an unknown reference or a single seed is one clear error."""
    from scipy import stats

    from dreamalloc.report.tables import versus_rows

    meta = [_labelled("meta", s, v) for s, v in enumerate([(4.0, 3.0), (4.4, 3.2), (4.2, 3.1)])]  # 3.5, 3.8, 3.65
    ctl = [_labelled("ctl", s, v) for s, v in enumerate([(3.0, 2.0), (3.2, 2.2), (2.8, 2.4), (3.1, 2.1)])]
    tie = [_labelled("tie", s, v) for s, v in enumerate([(4.0, 1.0), (2.0, 1.0)])]  # 2.5, 1.5: straddles ctl
    rows = versus_rows(meta + ctl + tie, "ctl")
    assert [(r["label"], r["set"]) for r in rows] == [("meta", "h"), ("tie", "h")]
    m, t = rows
    mine, ref = [3.5, 3.8, 3.65], [2.5, 2.7, 2.6, 2.6]
    want = stats.ttest_ind(mine, ref, equal_var=False).confidence_interval()
    assert m["difference"] == pytest.approx((np.mean(mine) - np.mean(ref), want.low, want.high))
    assert (m["n_seeds"], m["n_seeds_versus"]) == (3, 4) and m["beats"] and not m["behind"]
    assert not t["beats"] and not t["behind"]
    behind = versus_rows(meta + ctl, "meta")
    assert behind[0]["label"] == "ctl" and behind[0]["behind"] and not behind[0]["beats"]
    with pytest.raises(ValueError, match="no evaluation has that label; labels: ctl, meta"):
        versus_rows(meta + ctl, "nope")
    with pytest.raises(ValueError, match="at least 2 seeds"):
        versus_rows(meta + ctl[:1], "ctl")
    for i, res in enumerate(meta + ctl):
        save_results(tmp_path / "runs" / f"r{i}" / "eval" / "step_000000000010" / "results.json", res)
    code, out, err = _compare(tmp_path, capsys, "--versus", "ctl")
    assert code == 0, err
    assert "against 'ctl'" in out and re.search(r"\| meta +\| ctl +\| h +\| +3 \| +4 \|", out)
    header = (tmp_path / "out" / "compare_versus.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["suite", "label", "versus", "set"] and "difference_low" in header
    code, out, err = _compare(tmp_path, capsys, "--versus", "nope")
    assert code == 2 and "no evaluation has that label" in err


def _with_recovery(label, seed, agent_sum):
    """One set, one task, recovery over 16 decisions since a switch: the agent's per-decision sums (count 2 per
    decision), best fit and the oracle as references."""
    res = _labelled(label, seed, (4.0, 3.0))
    res["sets"] = {"h": {"tasks": {"a": res["sets"]["h"]["tasks"]["a"]}}}
    count = [2] * 16
    res["sets"]["h"]["tasks"]["a"]["recovery"] = {
        "agent": {"sum": list(agent_sum), "count": count}, "best": {"sum": [-1.0] * 16, "count": count},
        "first": {"sum": [-2.0] * 16, "count": count}, "switching oracle": {"sum": [0.0] * 16, "count": count}}
    return res


def test_recovery_curves_merge_seeds_per_window_beside_the_references(tmp_path, capsys):
    """compare_recovery: per label, each seed's mean reward per decision in windows of 8 decisions since a switch,
    with the interval across seeds; the hindsight-best rule (best: 5 > 2 on task a) and the oracle beside them;
    compare.py draws it to recovery_<set>_<task>.png."""
    from dreamalloc.report.tables import compare_recovery

    runs = [_with_recovery("m", 0, [-2.0] * 8 + [0.0] * 8), _with_recovery("m", 1, [-1.0] * 8 + [-0.5] * 8),
            _with_recovery("k", 0, [-1.0] * 16)]
    (key,) = compare_recovery(runs)
    curves = compare_recovery(runs)[key]
    assert key == ("s", "h", "a") and list(curves) == ["k", "m", "best fixed rule (best)", "switching oracle"]
    x, y = curves["m"]
    assert x == [0, 8]
    assert y[0] == pytest.approx(mean_ci([-1.0, -0.5])) and y[1] == pytest.approx(mean_ci([0.0, -0.25]))
    assert np.isnan(curves["k"][1][0][1])  # one seed: no interval
    assert [v[0] for v in curves["best fixed rule (best)"][1]] == [-0.5, -0.5]
    assert [v[0] for v in curves["switching oracle"][1]] == [0.0, 0.0]
    assert compare_recovery([_set_results(0, (4.0, 3.0))]) == {}  # no in-episode switches: nothing to draw
    for i, res in enumerate(runs):
        save_results(tmp_path / "runs" / f"r{i}" / "eval" / "step_000000000010" / "results.json", res)
    code, out, err = _compare(tmp_path, capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "recovery_h_a.png").stat().st_size > 1000


def test_find_results_follows_a_folder_of_links_once_each(tmp_path):
    """A folder of symlinks to the runs to compare works; a second link to the same run and a link back up to the
    folder itself are read once and cannot loop."""
    for i in range(2):
        save_results(tmp_path / "runs" / f"r{i}" / "eval" / "step_000000000010" / "results.json",
                     _labelled("m", i, (4.0, 3.0)))
    pick = tmp_path / "pick"
    pick.mkdir()
    (pick / "a").symlink_to(tmp_path / "runs" / "r0", target_is_directory=True)
    (pick / "b").symlink_to(tmp_path / "runs" / "r1", target_is_directory=True)
    (pick / "again").symlink_to(tmp_path / "runs" / "r1", target_is_directory=True)
    (pick / "loop").symlink_to(pick, target_is_directory=True)
    found = find_results([pick])
    assert sorted(res["seed"] for _, res in found) == [0, 1]
    assert all(f.name == "results.json" for f, _ in found)
