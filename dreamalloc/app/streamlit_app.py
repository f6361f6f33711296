"""The Streamlit script of the memory-map app (``python -m dreamalloc.app`` runs it): three pages chosen in the
sidebar. Everything it computes comes from ``engine.py``; everything it draws from ``charts.py``. A mistake in
what a person typed, uploaded or pointed at shows as a message in the page (``engine.AppInputError``)."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import streamlit as st
import torch

from dreamalloc.alloc.workloads.traces import DATA_DIR as TRACE_DIR
from dreamalloc.app import charts, engine

PAGES = ("Playground", "Replay", "Results browser")
LAYOUTS = {"Mandal & Rohil's pre-holed heap": "mandal", "empty heap": "empty", "saved layout": "saved"}
SOURCES = ("registered stream", "shipped trace", "uploaded trace")
MAX_STEP_ROWS = 300  # a longer request list's step map shows this many evenly spaced requests


# ------------------------------------------------------------------------------------------------------------------
# cached work (keyed by what was typed; loaded agents are shared resources)
# ------------------------------------------------------------------------------------------------------------------
@st.cache_resource(show_spinner="loading checkpoint")
def _agent(path: str):
    return engine.load_checkpoint_agent(path)


def _agents(text: str) -> list[tuple[str, object]]:
    """The checkpoints named one per line, loaded; each labelled by its agent and file."""
    out = []
    for i, line in enumerate(p.strip() for p in str(text).splitlines()):
        if line:
            policy = _agent(line)
            out.append((f"{policy.meta.get('agent', 'agent')} #{i + 1}", policy))
    return out


@st.cache_data(show_spinner="running the request list", max_entries=8)
def _playground(ops: tuple, cells: int, layout: tuple, rules: tuple, checkpoints: str):
    return engine.run_playground([engine.Op(k, a) for k, a in ops], cells, list(layout), list(rules),
                                 _agents(checkpoints))


@st.cache_data(show_spinner="replaying", max_entries=8)
def _replay(stream: str, params_json: str, cells: int, steps: int, rules: tuple, checkpoints: str, seed: int):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = engine.run_replay(stream, json.loads(params_json), cells, steps, list(rules), _agents(checkpoints), seed)
    return rep, sorted({str(w.message) for w in caught})


# ------------------------------------------------------------------------------------------------------------------
# pages
# ------------------------------------------------------------------------------------------------------------------
def playground() -> None:
    st.header("Playground")
    st.caption("Type request sizes (fK frees the block of the K-th allocation) and compare where each placement rule "
               "or learnt agent puts them.")
    c1, c2 = st.columns([1, 2])
    cells = engine.parse_cells(c1.text_input("Heap size N (cells)", str(engine.MANDAL_CELLS), key="cells"))
    kind = LAYOUTS[c2.radio("Starting layout", list(LAYOUTS), key="layout", horizontal=True)]
    saved = ""
    if kind == "saved":
        saved = c2.text_area("Occupied ranges (start-end, inclusive)", "0-9, 40-49", key="layout_text")
        up = c2.file_uploader("or a saved layout (the JSON the download below writes)", type=["json"],
                              key="layout_file")
        if up is not None:
            saved = up.getvalue().decode("utf-8", "replace")
            c2.caption(f"Using the uploaded layout {up.name}.")
    layout = engine.starting_layout(kind, cells, saved)
    text = st.text_input("Requests (sizes in cells; fK frees block K)", engine.DEFAULT_REQUESTS, key="requests")
    ops = engine.parse_requests(text, cells)
    rules = st.multiselect("Placement rules", engine.rule_names(), engine.rule_names(), key="rules")
    ckpts = st.text_area("Checkpoints of learnt agents (one path per line: a ckpt file, its folder or a run "
                         "directory)", "", key="checkpoints", height=68)
    if not rules and not ckpts.strip():
        st.warning("Choose at least one placement rule or give a checkpoint.")
        return
    runs = _playground(tuple((o.kind, o.arg) for o in ops), cells, tuple(layout), tuple(rules), ckpts)
    names = [r.name for r in runs]
    at = st.slider("Maps after request", 0, len(ops), len(ops), key="at_request") if len(ops) > 1 else len(ops)
    asked = f"request {at} ({runs[0].requests[at - 1]})" if at else "no request (the starting layout)"
    failed = [r.name for r in runs if at and r.failed[at - 1]]
    st.plotly_chart(charts.map_figure(np.stack([r.maps[at] for r in runs]), names,
                                      f"Memory map after {asked}" + (f"; failed for {', '.join(failed)}" if failed
                                                                      else "")), key="final_map")
    st.subheader("Failures and fragmentation at the end")
    st.table(engine.summary_rows(runs))
    st.caption("free runs / N: Mandal & Rohil's measure; 1 - largest free / free: how much of the free memory lies "
               "outside the largest run.")
    focus = st.radio("Request by request", names, key="focus", horizontal=True)
    run = runs[names.index(focus)]
    rows = ["start"] + [f"{i + 1}: {t}" + (" (failed)" if run.failed[i] else "") for i, t in enumerate(run.requests)]
    keep = np.unique(np.linspace(0, len(rows) - 1, min(len(rows), MAX_STEP_ROWS)).astype(int))
    title = f"{focus}: the map after each request" + (f" ({len(keep)} of {len(rows)} shown)" if len(keep) < len(rows)
                                                      else "")
    st.plotly_chart(charts.map_figure(run.maps[keep], [rows[i] for i in keep], title, row_height=18),
                    key="step_map")
    st.table(engine.placements(run))
    st.download_button("Save this final map as a layout (JSON)", json.dumps(engine.layout_of(run.maps[-1])),
                       file_name=f"layout_{focus}_{cells}.json", mime="application/json", key="save_layout")


def replay() -> None:
    st.header("Replay")
    st.caption("Run a request stream or an allocation trace under the chosen methods and step through it. A failed "
               "request (it fits in no free run) ends the episode and the next step starts an empty heap.")
    source = st.radio("Source", SOURCES, key="source", horizontal=True)
    c1, c2, c3 = st.columns(3)
    cells = engine.parse_cells(c1.text_input("Heap size N (cells)", "256", key="r_cells"))
    steps = int(c2.number_input("Steps", 1, engine.MAX_REPLAY_STEPS, 300, key="r_steps"))
    seed = int(c3.number_input("Seed", 0, 2**31 - 1, 0, key="r_seed"))
    if source == "registered stream":
        stream = st.selectbox("Stream", engine.replayable_streams(), index=engine.replayable_streams().index("mixed"),
                              key="stream")
        params = engine.parse_stream_params(st.text_input("Stream parameters (JSON)", "", key="params"))
    else:
        stream = "trace"
        gran = int(st.number_input("Bytes per cell", 1, 1 << 20, 64, key="granularity"))
        if source == "shipped trace":
            traces = engine.shipped_traces()
            path = st.selectbox("Trace", traces, index=traces.index("sqlite_insert") if "sqlite_insert" in traces
                                else 0, key="trace")
        else:
            up = st.file_uploader("Trace file (dreamalloc trace format v1, plain or .gz)", key="trace_file")
            if up is None:
                st.info("Upload a trace file: a first line '# dreamalloc-trace v1', then 'a ID SIZE' and 'f ID' lines.")
                return
            path = engine.save_upload(up.getvalue(), up.name)
        params = {"path": path, "granularity": gran}
    rules = st.multiselect("Placement rules", engine.rule_names(), ["first", "best", "worst"], key="r_rules")
    ckpts = st.text_area("Checkpoints of learnt agents (one path per line)", "", key="r_checkpoints", height=68)
    rep, notes = _replay(stream, json.dumps(params, sort_keys=True), cells, steps, tuple(rules), ckpts, seed)
    for n in notes:
        st.info(n.replace(str(TRACE_DIR) + os.sep, ""))  # a shipped trace by its file name
    diff = rep.first_difference
    t = st.slider("Step (starts where the maps first differ)", 0, rep.steps, diff or 0, key="step")
    st.markdown(f"**The methods' maps first differ at step {diff}.**" if diff is not None else
                "**The methods' maps never differ in these steps.**")
    runs = rep.runs
    st.plotly_chart(charts.map_figure(np.stack([r.maps[t] for r in runs]), [r.name for r in runs],
                                      f"Map at step {t}" + (f" (request: {runs[0].requests[t]} cells)"
                                                            if t < rep.steps else " (after the last step)"),
                                      layout_label=False), key="replay_map")
    st.table([{"method": r.name, "request": r.requests[t] if t < rep.steps else "",
               "occupancy": round(float(r.metrics["utilisation"][t]), 4),
               "free runs / N": round(float(r.metrics["frag_runs"][t]), 4),
               "1 - largest free / free": round(float(r.metrics["frag_largest"][t]), 4),
               "failures so far": int(r.failed[:t].sum())} for r in runs])
    marks = ([(t, "step")] if t != diff else []) + ([(diff, "first difference")] if diff is not None else [])
    st.plotly_chart(charts.animation_figure(runs), key="animation")
    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.curves_figure(runs, "utilisation", "Occupancy", marks), key="occupancy")
    c2.plotly_chart(charts.curves_figure(runs, "", "Failed requests (cumulative)", marks, cumulative_failures=True),
                    key="failures")
    c1.plotly_chart(charts.curves_figure(runs, "frag_runs", "Free runs / N", marks), key="frag_runs")
    c2.plotly_chart(charts.curves_figure(runs, "frag_largest", "1 - largest free / free", marks), key="frag_largest")


def results_browser() -> None:
    st.header("Results browser")
    st.caption("Point at a run directory (train.py / evaluate.py output), a folder of runs or one results.json.")
    path = st.text_input("Run directory or results.json", "", key="results_path")
    if not path.strip():
        st.info("Type a path to see its evaluation tables and adaptation plots.")
        return
    found, notes = engine.read_results(path)
    for n in notes:
        st.warning(n)
    from dreamalloc.report.tables import CI_NOTE_SEEDS, CI_NOTE_TRIALS, compare_rows, results_table

    st.subheader(f"{len(found)} evaluation(s)")
    rows = [row for _, res in found for row in results_table(res)]
    st.dataframe(engine.table_rows(rows), key="results_table")
    st.caption(CI_NOTE_TRIALS)
    if len(found) > 1:
        st.subheader("Across seeds")
        st.dataframe(engine.table_rows(compare_rows([res for _, res in found])), key="compare_table")
        st.caption(CI_NOTE_SEEDS)
    for f, res in found:
        st.markdown(f"**{res.get('label') or res['method']}**, seed {res['seed']}, step {res['step']}: `{f}`")
        for (sname, tname), curves in engine.adaptation_curves(res).items():
            st.plotly_chart(charts.adaptation_figure(curves, f"{sname} / {tname}: return per episode in a trial"),
                            key=f"adapt_{f}_{sname}_{tname}")


def main() -> None:
    torch.set_num_threads(1)  # the app's tensors are small: one thread is faster and never stalls on a busy core
    st.set_page_config(page_title="dreamalloc memory map", layout="wide")
    page = st.sidebar.radio("Page", PAGES, key="page")
    st.sidebar.caption("dreamalloc: placement rules and learnt allocators on one heap.")
    try:
        {"Playground": playground, "Replay": replay, "Results browser": results_browser}[page]()
    except engine.AppInputError as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001 - the page shows a message, never a traceback
        st.error(f"Something went wrong ({type(e).__name__}): {e}")


main()
