"""Tables of evaluation results: one evaluation (``results_table``) or many seeds merged (``compare_rows``).

A row is a dict. A value that carries a 95 % t-interval is a ``(mean, low, high)`` tuple: markdown shows
it as ``12.34 [11.90, 12.78]``, the CSV spreads it over ``col``, ``col_low``, ``col_high`` so a
spreadsheet or pandas reads plain numbers.

Which samples an interval is over matters, and differs by table:
- within one evaluation, the independent units are trials (fresh held-out tasks); the episodes of one
  trial share a task and the agent's memory, so they are not independent. The "return" interval is over
  per-trial mean returns; first/last-episode intervals are over trials.
- across seeds (``compare_rows``), the unit is the seed: each seed's mean return over all its trials and
  episodes is one sample, so the interval says how much a rerun would move the number.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from dreamalloc.report.results import Results, label_of
from dreamalloc.report.stats import mean_ci, recovery_curve, welch_ci

CI = tuple[float, float, float]  # (mean, low, high)
# One line under every table, saying what its intervals are over (n/a: fewer than 2 samples, no interval).
CI_NOTE_TRIALS = ("Intervals: 95 % Student-t over trials (return: over per-trial mean returns; first_ep / last_ep: "
                  "over trials); n/a: fewer than 2 trials.")
CI_NOTE_SEEDS = ("Intervals: 95 % Student-t across seeds (each seed's mean over all its trials and episodes is one "
                 "sample); n/a: fewer than 2 seeds.")
CI_NOTE_ADAPTATION = ("Intervals: 95 % Student-t over trials, every trial of every task of the set one sample; gain "
                      "is paired (last - first episode of each trial); n/a: fewer than 2 trials.")


def ci(x) -> CI:
    """(mean, low, high) with a 95 % t-interval; with fewer than 2 samples the interval is (nan, nan): n/a."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size < 2:
        m = mean_ci(x)[0]
        return m, float("nan"), float("nan")
    return mean_ci(x)


def _matrix(returns, name: str = "returns") -> np.ndarray:
    a = np.asarray(returns, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [trials][K] matrix, got shape {a.shape}")
    return a


def episode_curve(returns, confidence: float = 0.95) -> list[CI]:
    """Return by episode index within a trial: (mean, low, high) over trials for episodes 1..K.

    The meta-RL adaptation picture (docs/reference.md section 6): a method that learns within a trial rises
    from episode 1 to K; one that does not stays flat.
    """
    a = _matrix(returns)
    return [mean_ci(a[:, j], confidence) for j in range(a.shape[1])]


def _task_rows(results: Results):
    for sname, s in results["sets"].items():
        for tname, t in s["tasks"].items():
            yield sname, tname, t


def results_table(results: Results) -> list[dict]:
    """One row per (set, task) of one evaluation: return with CIs, first/last episode, metrics, baselines."""
    rows = []
    for sname, tname, t in _task_rows(results):
        r = _matrix(t["returns"])
        row: dict = {
            "set": sname, "task": tname, "method": results["method"], "seed": results["seed"],
            "step": results["step"], "trials": r.shape[0], "episodes": r.shape[1],
            "return": ci(r.mean(axis=1)),  # over per-trial means: trials are the independent units
            "first_ep": ci(r[:, 0]),
            "last_ep": ci(r[:, -1]),
        }
        for name, m in t["metrics"].items():
            row[name] = float(np.mean(m))
        row.update(_reference_cells([t]))
        rows.append(row)
    return rows


def _reference_cells(tasks: list[dict]) -> dict:
    """hindsight_rule / hindsight_best / capacity_bound over the tasks that have them (eval.baselines=off writes
    none: the rule reads "off" and the numbers are empty cells)."""
    have = [t for t in tasks if "hindsight_best" in t]
    if not have:
        return {"hindsight_rule": "off", "hindsight_best": None, "capacity_bound": None}
    cells = {"hindsight_rule": "/".join(sorted({t["hindsight_best"]["rule"] for t in have})),
             "hindsight_best": float(np.mean([np.mean(t["hindsight_best"]["returns"]) for t in have])),
             "capacity_bound": float(np.mean([np.mean(t["capacity_bound"]) for t in have]))}
    oracle = [t["switching_oracle"] for t in have if "switching_oracle" in t]  # in-episode switching streams
    if oracle:
        cells["switching_oracle"] = float(np.mean([np.mean(o["returns"]) for o in oracle]))
    return cells


def adaptation_rows(results: Results) -> list[dict]:
    """Within-trial adaptation per held-out set and over all of them: first- and last-episode return (trials
    of every task pooled, each trial one sample), the paired gain last - first, and ``adapts``: the last
    episode's interval lies wholly above the first's (the meta-RL acceptance test)."""
    pooled: dict[str, list[np.ndarray]] = {}
    for sname, _, t in _task_rows(results):
        r = _matrix(t["returns"])
        pooled.setdefault(sname, []).append(r)
    groups = {k: np.concatenate(v) for k, v in pooled.items()}
    if len(groups) > 1:
        groups["all"] = np.concatenate(list(groups.values()))
    rows = []
    for name, r in groups.items():
        first, last = ci(r[:, 0]), ci(r[:, -1])
        rows.append({"method": results["method"], "set": name, "trials": r.shape[0], "episodes": r.shape[1],
                     "first_ep": first, "last_ep": last, "gain": ci(r[:, -1] - r[:, 0]),
                     "adapts": bool(last[1] > first[2])})
    return rows


def _group(found: Iterable[Results]) -> dict[tuple[str, str, str, str], list[tuple[Results, dict]]]:
    """(suite, set, task, label) -> [(results of one seed, its task result)], in first-seen order (label: the
    result's ``label``, or its method for files written without one)."""
    groups: dict[tuple[str, str, str, str], list[tuple[Results, dict]]] = {}
    for res in found:
        for sname, tname, t in _task_rows(res):
            groups.setdefault((res["suite"], sname, tname, label_of(res)), []).append((res, t))
    return groups


def _ordered_groups(found: Iterable[Results]) -> list[tuple[tuple[str, str, str, str], list[tuple[Results, dict]]]]:
    """``_group``'s items in the suite's order of sets and tasks (as the results hold them), then by label."""
    groups = _group(found)
    sets, tasks = _seen(k[1] for k in groups), _seen(k[1:3] for k in groups)
    return sorted(groups.items(), key=lambda kv: (kv[0][0], sets[kv[0][1]], tasks[kv[0][1:3]], kv[0][3]))


def _seen(items: Iterable) -> dict:
    """Each item's first-seen index: tables list sets and tasks in the suite's order (as the results hold them),
    not alphabetically."""
    order: dict = {}
    for x in items:
        order.setdefault(x, len(order))
    return order


def step_warnings(found: Iterable[Results]) -> list[str]:
    """One warning per label whose seeds were evaluated at different training steps (kept, not dropped: the
    table's step column shows the range)."""
    steps: dict[tuple[str, str], dict[int, int]] = {}
    for res in found:
        steps.setdefault((label_of(res), res["suite"]), {})[res["seed"]] = res["step"]
    out = []
    for (label, suite), by_seed in sorted(steps.items()):
        if len(set(by_seed.values())) > 1:
            out.append(f"{label!r} (suite {suite!r}): its runs differ in steps ("
                       + ", ".join(f"seed {s}: {st}" for s, st in sorted(by_seed.items()))
                       + "); all are kept and merged in one row")
    return out


def _check_one_per_seed(key, members) -> None:
    seeds = [res["seed"] for res, _ in members]
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise ValueError(f"label {key[3]!r} set {key[1]!r} task {key[2]!r}: several evaluations of seed(s) "
                         f"{dup}; keep one per seed (results.latest_per_run keeps the largest step)")


def compare_rows(found: Iterable[Results]) -> list[dict]:
    """Merge evaluations of several variants and seeds: one row per (suite, set, task, label).

    Each seed contributes its mean over all trials and episodes; the interval is across seeds (with one
    seed it is n/a, and ``n_seeds`` says so). Pass one evaluation per (label, seed):
    see ``results.latest_per_run``.
    """
    rows = []
    for key, members in _ordered_groups(found):
        _check_one_per_seed(key, members)
        suite, sname, tname, label = key
        rets = [_matrix(t["returns"]) for _, t in members]
        steps = sorted({res["step"] for res, _ in members})
        rows.append({
            "suite": suite, "label": label, "method": "/".join(sorted({res["method"] for res, _ in members})),
            "set": sname, "task": tname,
            "n_seeds": len(members),
            "seeds": " ".join(str(res["seed"]) for res, _ in members),
            "step": steps[0] if len(steps) == 1 else f"{steps[0]}-{steps[-1]}",  # a range flags unequal runs
            "return": ci([r.mean() for r in rets]),
            "first_ep": ci([r[:, 0].mean() for r in rets]),
            "last_ep": ci([r[:, -1].mean() for r in rets]),
            **_reference_cells([t for _, t in members]),
            # the family's per-episode metrics (e.g. mean_job_time) every seed reports: per-seed means, across seeds
            **{m: ci([float(np.mean(t["metrics"][m])) for _, t in members])
               for m in sorted(set.intersection(*[set(t.get("metrics", {})) for _, t in members]))},
        })
    return rows


def _set_groups(found: Iterable[Results]) -> list[tuple[tuple[str, str, str], dict[int, list[tuple[str, dict]]]]]:
    """[((suite, set, label), {seed: [(task, task result)]})] in the suite's order of sets, then by label."""
    groups: dict[tuple[str, str, str], dict[int, list[tuple[str, dict]]]] = {}
    for res in found:
        for sname, tname, t in _task_rows(res):
            groups.setdefault((res["suite"], sname, label_of(res)), {}).setdefault(res["seed"], []).append((tname, t))
    sets = _seen(k[1] for k in groups)
    return sorted(groups.items(), key=lambda kv: (kv[0][0], sets[kv[0][1]], kv[0][2]))


def _set_returns(sname: str, label: str, by_seed: dict) -> tuple[list[str], list[float]]:
    """The set's task names and each seed's set return: the mean over the set's tasks of its mean return per task."""
    tasks = [sorted(t for t, _ in members) for members in by_seed.values()]
    if any(t != tasks[0] for t in tasks):
        raise ValueError(f"label {label!r} set {sname!r}: seeds evaluated different tasks {tasks}")
    return tasks[0], [float(np.mean([_matrix(t["returns"]).mean() for _, t in members]))
                      for members in by_seed.values()]


def set_rows(found: Iterable[Results]) -> list[dict]:
    """One row per (suite, held-out set, label): the method against every fixed rule on the set as a whole.

    A seed's set return is the mean over the set's tasks of its mean return per task; ``return`` is over seeds.
    Each rule's set return is the same mean of its per-task returns (the rules play the evaluation's streams,
    the same for every seed: averaged over the seeds' copies), ``best_rule`` the rule with the largest, and
    ``vs_best_rule`` the seeds' set returns minus it, with ``beats_best_rule`` where that interval lies wholly
    above 0. ``rule_per_task`` is the set return of picking, for each task, the rule best on that task (a
    selector told the task): the most a policy that plays one fixed rule per task could reach, against
    ``capacity_bound``, what any placement could. Rows of sets evaluated without the rules (``eval.baselines=off``)
    carry only the return."""
    rows = []
    for (suite, sname, label), by_seed in _set_groups(found):
        tasks, per_seed = _set_returns(sname, label, by_seed)
        row = {"suite": suite, "label": label, "set": sname, "tasks": len(tasks), "n_seeds": len(per_seed),
               "return": ci(per_seed)}
        every = [t for members in by_seed.values() for _, t in members]
        if all("heuristics" in t for t in every):
            rules = {r: float(np.mean([[t["heuristics"][r] for _, t in members] for members in by_seed.values()]))
                     for r in every[0]["heuristics"]}
            best = max(rules, key=rules.get)
            gap = ci([x - rules[best] for x in per_seed])
            named = [(tn, t) for members in by_seed.values() for tn, t in members]
            per_task = [max(float(np.mean([t["heuristics"][r] for tn, t in named if tn == task])) for r in rules)
                        for task in tasks]
            row.update(best_rule=best, best_rule_return=rules[best], vs_best_rule=gap,
                       rule_per_task=float(np.mean(per_task)),
                       beats_best_rule=bool(gap[1] > 0),
                       capacity_bound=float(np.mean([np.mean(t["capacity_bound"]) for t in every])),
                       **{f"rule_{r}": v for r, v in rules.items()})
        rows.append(row)
    return rows


def versus_rows(found: Iterable[Results], reference: str) -> list[dict]:
    """One row per (suite, held-out set, label other than ``reference``): the label's set return minus the
    reference label's, seed means against seed means with Welch's 95 % interval (independent groups: seed i of one
    method is not paired with seed i of the other), ``beats`` where that interval lies wholly above 0 and ``behind``
    where it lies below. ``reference`` is a label as the tables print it; an unknown one, or one with fewer than 2
    seeds on a set, is an error naming what there is."""
    per = {k: _set_returns(k[1], k[2], by_seed) for k, by_seed in _set_groups(found)}  # in the suite's order
    labels = sorted({k[2] for k in per})
    if reference not in labels:
        raise ValueError(f"--versus {reference!r}: no evaluation has that label; labels: {', '.join(labels)}")
    rows = []
    for (suite, sname, label), (tasks, mine) in per.items():
        ref = per.get((suite, sname, reference))
        if label == reference or ref is None:
            continue
        if ref[0] != tasks:
            raise ValueError(f"set {sname!r}: {label!r} and {reference!r} were evaluated on different tasks "
                             f"({tasks} and {ref[0]})")
        if len(mine) < 2 or len(ref[1]) < 2:
            raise ValueError(f"set {sname!r}: --versus needs at least 2 seeds of each label; {label!r} has "
                             f"{len(mine)}, {reference!r} {len(ref[1])}")
        diff = welch_ci(mine, ref[1])
        rows.append({"suite": suite, "label": label, "versus": reference, "set": sname, "n_seeds": len(mine),
                     "n_seeds_versus": len(ref[1]), "return": ci(mine), "return_versus": ci(ref[1]),
                     "difference": diff, "beats": bool(diff[1] > 0), "behind": bool(diff[2] < 0)})
    return rows


def compare_recovery(found: Iterable[Results], window: int = 8) -> dict[tuple[str, str, str], dict[str, tuple]]:
    """Recovery after an in-episode switch across seeds: {(suite, set, task): {name: (x, [(mean, low, high)])}}.

    For each label, each seed's mean reward per decision in windows of ``window`` decisions since the switch
    (``report.stats.recovery_curve``), merged per window with a 95 % interval across seeds (windows every seed
    has). Beside the labels, the task's hindsight-best fixed rule and the switching oracle, from the first seed's
    results (the references play the same streams for every seed; no interval). Tasks without recovery curves
    (suites that do not switch inside an episode) are left out."""
    labels: dict[tuple[str, str, str], dict[str, tuple]] = {}
    refs: dict[tuple[str, str, str], dict[str, tuple]] = {}
    for key, members in _ordered_groups(found):
        if not all("recovery" in t for _, t in members):
            continue
        _check_one_per_seed(key, members)
        per_seed = [dict(zip(*recovery_curve(t["recovery"]["agent"]["sum"], t["recovery"]["agent"]["count"], window),
                             strict=True)) for _, t in members]
        xs = sorted(set.intersection(*[set(c) for c in per_seed]))
        labels.setdefault(key[:3], {})[key[3]] = (xs, [ci([c[x] for c in per_seed]) for x in xs])
        first = members[0][1]  # the references: no interval
        named = {"switching oracle": "switching oracle"}
        if "hindsight_best" in first:
            named = {first["hindsight_best"]["rule"]: f"best fixed rule ({first['hindsight_best']['rule']})", **named}
        for name, shown in named.items():
            if name in first["recovery"]:
                x, y = recovery_curve(first["recovery"][name]["sum"], first["recovery"][name]["count"], window)
                refs.setdefault(key[:3], {})[shown] = (x, [(v, float("nan"), float("nan")) for v in y])
    return {k: {**by_label, **refs.get(k, {})} for k, by_label in labels.items()}  # the references after the labels


def compare_curves(found: Iterable[Results]) -> tuple[dict[tuple[str, str, str], dict[str, list[CI]]], list[str]]:
    """Adaptation curves across seeds: {(suite, set, task): {label: [(mean, low, high)] for episodes 1..K}}.

    Each seed's curve is its per-episode-index mean over trials; the band is the interval across seeds.
    A method whose seeds disagree on K has no common x axis: it is left out and named in the returned
    list of warnings rather than stopping the whole comparison.
    """
    curves: dict[tuple[str, str, str], dict[str, list[CI]]] = {}
    warnings = []
    for key, members in sorted(_group(found).items()):
        _check_one_per_seed(key, members)
        per_seed = [_matrix(t["returns"]).mean(axis=0) for _, t in members]  # [K] each
        ks = sorted({len(c) for c in per_seed})
        if len(ks) > 1:
            warnings.append(f"label {key[3]!r} set {key[1]!r} task {key[2]!r}: seeds have different "
                            f"episodes_per_trial {ks}; no adaptation curve drawn")
            continue
        a = np.stack(per_seed)  # [seeds, K]
        curves.setdefault(key[:3], {})[key[3]] = [mean_ci(a[:, j]) for j in range(a.shape[1])]
    return curves, warnings


def _is_ci(v) -> bool:
    return isinstance(v, tuple) and len(v) == 3


def format_value(v, digits: int = 2) -> str:
    """How a table cell reads: ``12.34 [11.90, 12.78]`` for an interval, fixed decimals for a float."""
    if v is None:
        return ""
    if _is_ci(v):
        m, lo, hi = v
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return f"{m:.{digits}f} [n/a]"
        return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    if isinstance(v, float | np.floating):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 2) -> str:
    """A GitHub markdown table; columns padded so it also reads aligned in a terminal.

    ``columns`` picks and orders the keys (default: every key, in first-seen order); a missing value is
    an empty cell. Numeric columns are right-aligned.
    """
    columns = list(columns) if columns is not None else _columns(rows)
    cells = [[format_value(r.get(c), digits).replace("|", "\\|") for c in columns] for r in rows]
    numeric = [all(isinstance(r.get(c), int | float | tuple | np.number) and not isinstance(r.get(c), bool)
                   for r in rows if r.get(c) is not None) and any(r.get(c) is not None for r in rows)
               for c in columns]
    widths = [max([len(c), 3] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values):
        padded = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                         for w, num in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(columns), sep] + [line(c) for c in cells]) + "\n"


def _columns(rows: Sequence[dict]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return list(cols)


def write_csv(rows: Sequence[dict], path: str | os.PathLike, columns: Sequence[str] | None = None) -> Path:
    """Write rows as CSV; an interval column ``c`` becomes ``c``, ``c_low``, ``c_high`` (full precision)."""
    path = Path(path)
    columns = list(columns) if columns is not None else _columns(rows)
    ci_cols = {c for c in columns if any(_is_ci(r.get(c)) for r in rows)}
    header = []
    for c in columns:
        header += [c, f"{c}_low", f"{c}_high"] if c in ci_cols else [c]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            out = []
            for c in columns:
                v = r.get(c)
                if c in ci_cols:
                    out += list(v) if _is_ci(v) else ["" if v is None else v, "", ""]
                else:
                    out.append("" if v is None else v)
            w.writerow([repr(float(v)) if isinstance(v, float | np.floating) else v for v in out])
    return path


PEAK_COLUMNS = ("trace", "method", "seeds", "extent_over_live", "frag_at_peak", "failures", "decision_us",
                "policy_us")


def peak_rows(docs: Iterable[dict]) -> list[dict]:
    """One row per (trace, method) from ``eval.mode=peak`` documents: agent rows grouped by label (mean and 95 %
    t-interval across seeds of extent / max live, fragmentation at peak and failures; median decision times
    averaged), fixed rules and the bound once (deterministic: the same in every document on the same heap; a
    rule that differs between documents of one trace is an error, as their heaps then differ)."""
    agents: dict[tuple[str, str], list[dict]] = {}
    fixed: dict[tuple[str, str], dict] = {}
    order: list[tuple[str, str]] = []
    for doc in docs:
        for r in doc["rows"]:
            key = (r["trace"], r["method"])
            if r["method"] == doc["label"]:
                agents.setdefault(key, []).append(r)
            elif key in fixed:
                same = all(fixed[key].get(k) == r.get(k) for k in ("cells", "granularity", "peak_extent", "failures"))
                if not same:
                    raise ValueError(f"{r['method']} on {r['trace']} differs between peak documents (heap "
                                     f"{fixed[key]['cells']} vs {r['cells']} cells): compare runs on the same heaps")
                continue
            else:
                fixed[key] = r
            if key not in order:
                order.append(key)
    rows = []
    for key in sorted(order, key=lambda k: (k[0], k not in agents)):
        group = agents.get(key) or [fixed[key]]
        row = {"trace": key[0], "method": key[1], "seeds": len(group) if key in agents else "",
               "cells": group[0]["cells"], "granularity": group[0]["granularity"]}
        for k in ("extent_over_live", "frag_at_peak", "failures"):
            vals = [g[k] for g in group if g.get(k) is not None]
            row[k] = ci(vals) if key in agents and len(vals) > 1 else (vals[0] if vals else None)
        for k in ("decision_us", "policy_us"):
            vals = [g[k] for g in group if g.get(k) is not None]
            row[k] = float(np.mean(vals)) if vals else None
        rows.append(row)
    return rows
