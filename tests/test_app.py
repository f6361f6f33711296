"""The memory-map app (dreamalloc/app): its engine on hand-worked heaps, and every page and every bad input of the
issue through Streamlit's AppTest (the page script run in-process, widgets set as a person would)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dreamalloc.app import engine
from dreamalloc.app.__main__ import command
from dreamalloc.app.charts import decode_source, map_figure

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "dreamalloc" / "app" / "streamlit_app.py")
LB_CHECKPOINT = ROOT / "tests" / "data" / "pre_families_a2c_lb.safetensors"  # a load-balancing agent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny DQN trained on a 64-cell heap (2.5 s) and evaluated with its baselines, K = 2 episodes a trial."""
    from hydra import compose, initialize_config_dir

    from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
    from dreamalloc.experiment.training import train

    tmp = tmp_path_factory.mktemp("app_run")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "logger=disabled", "progress=off", "device=cpu", "seed=3", "eval.trials=2", "eval.episodes_per_trial=2",
            "eval.timeline=false", "env=alloc64", "env.num_envs=4", "suite=lim2024_mixed", "steps=128", "agent=dqn",
            "agent.learning_starts=64"])
    cfg.run_dir, cfg.checkpoint_dir = str(tmp / "run"), str(tmp / "ckpt")
    return Path(train(cfg, [])["run_dir"])


def app(page: str = "Playground") -> AppTest:
    at = AppTest.from_file(SCRIPT, default_timeout=60).run()
    if page != "Playground":
        at.sidebar.radio(key="page").set_value(page).run()
    return at


def errors(at: AppTest) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]  # a message, never a traceback
    return [e.value for e in at.error]


def one_error(at: AppTest, *words: str) -> str:
    errs = errors(at)
    assert len(errs) == 1, errs
    for w in words:
        assert w in errs[0], errs[0]
    return errs[0]


def chart(at: AppTest, key: str) -> dict:
    return json.loads(at.get_by_key(key).proto.spec)


# ------------------------------------------------------------------------------------------------------------------
# engine
# ------------------------------------------------------------------------------------------------------------------
def test_request_lists_parse_and_bad_ones_are_named():
    assert engine.parse_requests("8, 12 f1\n5", 100) == [engine.Op("a", 8), engine.Op("a", 12), engine.Op("f", 1),
                                                         engine.Op("a", 5)]
    bad = {"8, x, 3": "request 2 ('x') is not an integer", "8 -4": "request 2 asks for -4 cells",
           "0": "a size must be a positive integer", "8 101": "more than the whole heap (100 cells)",
           "8 f2": "frees block 2, but only 1 allocation", "8 f1 f1": "frees block 1 a second time",
           " , ": "the request list is empty", "2.5": "request 1 ('2.5') is not an integer"}
    for text, message in bad.items():
        with pytest.raises(engine.AppInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            engine.parse_requests(text, 100)
    assert engine.parse_layout("0-9, 40-49", 100) == [(0, 9), (40, 49)] == engine.parse_layout("[[40, 49], [0, 9]]",
                                                                                                  100)
    for text, message in {"0-9, 5-12": "overlap", "90-100": "<= 99", "a-b": "not an occupied range",
                          "[[0, 1], [2]]": "not a list of"}.items():
        with pytest.raises(engine.AppInputError, match=message):
            engine.parse_layout(text, 100)
    for text in ("abc", "1", "70000"):
        with pytest.raises(engine.AppInputError, match="heap size"):
            engine.parse_cells(text)


def test_mandal_heap_by_hand():
    """Mandal & Rohil's heap: free runs 0-4, 15-24, 30-39, 55-64, 70-79, 95-99. Best fit puts 8 in the lowest of the
    smallest fitting runs (15-22); 12 and 11 fit nowhere; 5 fills 0-4; 9 goes to 30-38; 4 to the 5-cell run 95-98
    and 6 to 55-60. First fit puts 4 and 6 in the first runs that hold them: 55-58 and 59-64."""
    ops = engine.parse_requests(engine.DEFAULT_REQUESTS, 100)
    runs = {r.name: r for r in engine.run_playground(ops, 100, engine.starting_layout("mandal", 100),
                                                       engine.rule_names())}
    assert set(runs) == set(engine.rule_names())
    best = [p["result"] for p in engine.placements(runs["best"])]
    assert best == ["cells 15-22", "failed: fits in no free run", "cells 0-4", "cells 30-38",
                    "failed: fits in no free run", "cells 95-98", "cells 55-60"]
    first = [p["result"] for p in engine.placements(runs["first"])]
    assert first[5:] == ["cells 55-58", "cells 59-64"]
    for r in runs.values():
        assert r.failed.tolist() == [False, True, False, False, True, False, False]
        occ = r.maps >= 0
        assert occ[0].sum() == 50 and occ[-1].sum() == 50 + 8 + 5 + 9 + 4 + 6
        # both fragmentation measures, recomputed from the final map
        free_runs = engine.layout_of(np.where(occ[-1], -1, 0))  # the free ranges
        free = 100 - occ[-1].sum()
        largest = max(b - a + 1 for a, b in free_runs)
        assert r.metrics["frag_runs"][-1] == pytest.approx(len(free_runs) / 100)
        assert r.metrics["frag_largest"][-1] == pytest.approx(1 - largest / free)
    rows = {row["method"]: row for row in engine.summary_rows(runs.values())}
    assert rows["best"]["failed requests"] == "2 (12), 5 (11)" and rows["best"]["free runs / N"] == 0.05


def test_frees_and_next_fit_by_hand():
    ops = engine.parse_requests("30 40 f1 10 50 f2 5", 100)
    runs = {r.name: r for r in engine.run_playground(ops, 100, [], ["first", "next"])}
    assert [p["result"] for p in engine.placements(runs["first"])] == [
        "cells 0-29", "cells 30-69", "freed", "cells 0-9", "failed: fits in no free run", "freed", "cells 10-14"]
    assert [p["result"] for p in engine.placements(runs["next"])][3] == "cells 70-79"  # the rover sits at 70
    assert (runs["first"].maps[3] == -1)[:30].all()  # block 1 freed by request 3


def test_replay_steps_and_the_first_difference():
    rep = engine.run_replay("mixed", {}, 64, 200, ["first", "best", "worst"])
    occ = np.stack([r.maps >= 0 for r in rep.runs])  # [methods, steps + 1, N]
    d = rep.first_difference
    assert d is not None and d > 0
    assert (occ[:, :d] == occ[:1, :d]).all() and (occ[:, d] != occ[0, d]).any()
    for r in rep.runs:
        assert r.failed.any()  # 200 steps on 64 cells: every rule meets a request that fits nowhere
        for t in np.flatnonzero(r.failed):
            assert not (r.maps[t + 1] >= 0).any()  # the episode ended: the next step starts an empty heap
        assert r.metrics["utilisation"][0] == 0 and np.allclose(r.metrics["utilisation"], (r.maps >= 0).mean(1))
    same = engine.run_replay("mixed", {}, 64, 50, ["best", "best"])
    assert same.first_difference is None
    with pytest.raises(engine.AppInputError, match="steps must lie"):
        engine.run_replay("mixed", {}, 64, 0, ["best"])


def test_saved_layouts_round_trip():
    labels = np.array([-1, 0, 0, -1, 3, 3, 5, -1, -1, 2])
    assert engine.layout_of(labels) == [[1, 2], [4, 6], [9, 9]]  # adjacent blocks make one occupied range
    assert engine.parse_layout(json.dumps(engine.layout_of(labels)), 10) == [(1, 2), (4, 6), (9, 9)]
    run = engine.run_playground(engine.parse_requests("3 2", 10), 10, [(1, 2), (4, 6), (9, 9)], ["first"])[0]
    assert [p["result"] for p in engine.placements(run)] == ["failed: fits in no free run", "cells 7-8"]


def test_large_heap_is_drawn_downsampled():
    cells = 8192
    ops = engine.parse_requests(" ".join(["300"] * 20 + ["f2", "f5", "100"]), cells)
    runs = engine.run_playground(ops, cells, engine.starting_layout("mandal", cells), ["first", "worst"])
    fig = map_figure(np.stack([r.maps[-1] for r in runs]), ["first", "worst"])
    img = decode_source(fig.data[0].source)  # [rows, bins, 3]: one pixel per row and bin
    assert img.shape == (2, engine.MAP_WIDTH, 3)
    assert (img[0, -1] == 217).all()  # the heap's last 8 cells are free in first fit: the free grey (0.85 * 255)
    assert fig.data[0].dx == pytest.approx(cells / engine.MAP_WIDTH)
    # a bin's colour is the mean of its 8 cells: all free -> the free grey, all one block -> that block's colour
    rgb = engine.downsample(np.arange(16 * 3, dtype=float).reshape(1, 16, 3), 4)
    assert rgb.shape == (1, 4, 3) and rgb[0, 0, 0] == pytest.approx(np.mean([0, 3, 6, 9]))


def test_large_heap_page_and_the_history_cap():
    """A 16,384-cell heap with 450 requests: the page answers in seconds and sends each map as a 1,024-bin PNG
    (the step map: 300 of its 451 rows). The map history a run keeps is capped (steps x N x methods)."""
    at = app()
    at.text_input(key="cells").set_value("16384").run()
    at.text_input(key="requests").set_value(" ".join(f"3000 700 f{2 * i + 1}" for i in range(150))).run()
    assert errors(at) == []
    for key, rows in (("final_map", 5), ("step_map", 300)):
        spec = chart(at, key)
        img = decode_source(spec["data"][0]["source"])
        assert img.shape[1] == engine.MAP_WIDTH and img.shape[0] == rows, (key, img.shape)
        assert len(json.dumps(spec)) < 2_000_000  # kB, not a list of 16,384 x 451 cells
    at.text_input(key="cells").set_value("65536").run()
    one_error(at, "450 requests x 65536 cells x 5 methods is more map history", "at most 121 requests")


def test_command_line():
    cmd = command(["--port", "8600", "--headless"])
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("streamlit_app.py")
    assert cmd[cmd.index("--server.port") + 1] == "8600" and cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    with pytest.raises(SystemExit):
        command(["--port", "0"])


# ------------------------------------------------------------------------------------------------------------------
# Playground
# ------------------------------------------------------------------------------------------------------------------
def test_playground_page():
    at = app()
    assert errors(at) == []
    summary = at.table[0].value
    assert list(summary["method"]) == engine.rule_names() and list(summary["failed"]) == [2] * 5
    steps = at.table[1].value  # request by request of the first rule
    assert len(steps) == 7 and steps["result"].iloc[0] == "cells 15-22"
    first_map = chart(at, "step_map")
    final = chart(at, "final_map")
    assert at.slider(key="at_request").value == 7 and "after request 7 (6)" in final["layout"]["title"]["text"]
    at.slider(key="at_request").set_value(2).run()
    after_2 = chart(at, "final_map")
    assert "failed for first, next, best, worst, second" in after_2["layout"]["title"]["text"]  # 12 fits nowhere
    assert after_2["data"][0]["source"] != final["data"][0]["source"]
    at.slider(key="at_request").set_value(7).run()
    at.radio(key="focus").set_value("worst").run()
    assert errors(at) == []
    worst = at.table[1].value["result"]
    assert worst.iloc[0] == "cells 15-22" and worst.iloc[2] == "cells 30-34"  # 5 cells: best fit took 0-4
    assert chart(at, "step_map") != first_map
    at.text_input(key="requests").set_value("8 f1 12").run()
    assert errors(at) == [] and list(at.table[0].value["failed"]) == [1] * 5
    at.radio(key="layout").set_value("empty heap").run()
    assert errors(at) == [] and list(at.table[0].value["failed"]) == [0] * 5
    at.radio(key="layout").set_value("saved layout").run()
    at.text_area(key="layout_text").set_value("[[0, 49]]").run()
    assert errors(at) == [] and at.table[1].value["result"].iloc[0] == "cells 50-57"
    at.file_uploader(key="layout_file").upload("layout.json", b"[[0, 9], [20, 99]]", "application/json").run()
    assert errors(at) == [] and at.table[1].value["result"].iloc[0] == "cells 10-17"
    assert at.table[1].value["result"].iloc[2] == "failed: fits in no free run"  # 12 > the 10 free cells left


def test_playground_bad_inputs(run_dir):
    cases = [("requests", "8, x, 3", ["request 2", "not an integer"]), ("requests", "8 -4", ["-4 cells"]),
             ("requests", "8 500", ["500 cells", "more than the whole heap (100 cells)"]),
             ("cells", "ten", ["heap size", "not an integer"])]
    for key, value, words in cases:
        at = app()
        at.text_input(key=key).set_value(value).run()
        one_error(at, *words)
    at = app()
    at.radio(key="layout").set_value("saved layout").run()
    at.text_area(key="layout_text").set_value("0-9, 5-20").run()
    one_error(at, "overlap")
    # a checkpoint of another env family, of another heap size, and none at all
    at = app()
    at.text_area(key="checkpoints").set_value(str(LB_CHECKPOINT)).run()
    one_error(at, "another env family")
    at.text_area(key="checkpoints").set_value(str(run_dir)).run()
    one_error(at, "trained on a heap of 64 cells", "has 100")
    at.text_area(key="checkpoints").set_value(str(run_dir / "nothing_here")).run()
    one_error(at, "cannot load the checkpoint", "does not exist")
    damaged = run_dir / "damaged.safetensors"
    damaged.write_bytes(b"\x00" * 64)
    at.text_area(key="checkpoints").set_value(str(damaged)).run()
    one_error(at, "cannot load the checkpoint")


def test_playground_runs_a_learnt_agent(run_dir):
    at = app()
    at.text_input(key="cells").set_value("64").run()
    at.text_area(key="checkpoints").set_value(str(run_dir)).run()
    assert errors(at) == []
    methods = list(at.table[0].value["method"])
    assert methods == engine.rule_names() + ["dqn #1"]
    at.radio(key="focus").set_value("dqn #1").run()
    assert errors(at) == [] and len(at.table[1].value) == 7
    at.sidebar.radio(key="page").set_value("Replay").run()
    at.text_input(key="r_cells").set_value("64").run()
    at.number_input(key="r_steps").set_value(40).run()
    at.text_area(key="r_checkpoints").set_value(str(run_dir)).run()
    assert errors(at) == [] and list(at.table[0].value["method"]) == ["first", "best", "worst", "dqn #1"]
    at.selectbox(key="stream").set_value("shift").run()
    at.text_input(key="params").set_value('{"tasks": [{"name": "a", "stream": "random"}, '
                                          '{"name": "b", "stream": "bf-good"}], "at": 16}').run()
    assert errors(at) == [] and len(at.table[0].value) == 4


# ------------------------------------------------------------------------------------------------------------------
# Replay
# ------------------------------------------------------------------------------------------------------------------
def test_replay_page():
    at = app("Replay")
    at.number_input(key="r_steps").set_value(60).run()
    assert errors(at) == []
    diff = int(at.markdown[0].value.split("first differ at step ")[1].rstrip(".*"))
    assert at.slider(key="step").value == diff > 0  # the slider opens where the methods' maps part
    rows = at.table[0].value
    assert list(rows["method"]) == ["first", "best", "worst"]
    before = chart(at, "replay_map")
    at.slider(key="step").set_value(0).run()
    assert errors(at) == [] and (at.table[0].value["occupancy"] == 0).all()  # step 0: an empty heap
    assert chart(at, "replay_map") != before
    for key in ("animation", "occupancy", "failures", "frag_runs", "frag_largest"):
        assert chart(at, key)["data"], key
    at.selectbox(key="stream").set_value("adversarial").run()
    at.text_input(key="params").set_value('{"target": "best"}').run()
    assert errors(at) == []
    at.radio(key="source").set_value("shipped trace").run()
    at.selectbox(key="trace").set_value("sort_gpl").run()
    assert errors(at) == [] and len(at.table[0].value) == 3


def test_replay_of_an_uploaded_trace_and_bad_uploads():
    at = app("Replay")
    at.radio(key="source").set_value("uploaded trace").run()
    assert errors(at) == [] and "Upload a trace file" in at.info[0].value
    good = b"# dreamalloc-trace v1\na 0 256\na 1 128\nf 0\na 2 32\n"
    at.file_uploader(key="trace_file").upload("mine.trace", good).run()
    at.number_input(key="r_steps").set_value(10).run()
    assert errors(at) == [] and at.table[0].value["request"].tolist() == ["4"] * 3  # 256 B at 64 B per cell
    bad = {b"a 0 64\n": "line 1: expected the header", b"# dreamalloc-trace v1\na 0 x\n": "line 2",
           b"# dreamalloc-trace v1\nf 3\n": "free of id 3", gzip.compress(b"# dreamalloc-trace v1\na 0 64\n")[:20]:
           "truncated"}
    for data, words in bad.items():
        at = app("Replay")
        at.radio(key="source").set_value("uploaded trace").run()
        name = "bad.trace.gz" if data[:2] == b"\x1f\x8b" else "bad.trace"
        at.file_uploader(key="trace_file").upload(name, data).run()
        one_error(at, "malformed", name, words)


def test_replay_bad_stream_parameters():
    at = app("Replay")
    at.text_input(key="params").set_value("{target: best").run()
    one_error(at, "not valid JSON")
    at.text_input(key="params").set_value('{"no_such_param": 3}').run()
    one_error(at, "stream 'mixed'")
    at.text_input(key="params").set_value("[1, 2]").run()
    one_error(at, "JSON object")


# ------------------------------------------------------------------------------------------------------------------
# Results browser
# ------------------------------------------------------------------------------------------------------------------
def test_results_browser(run_dir):
    at = app("Results browser")
    assert errors(at) == [] and "Type a path" in at.info[0].value
    at.text_input(key="results_path").set_value(str(run_dir)).run()
    assert errors(at) == []
    table = at.dataframe[0].value
    assert list(table["method"]) == ["dqn"] and list(table["task"]) == ["mixed"]
    assert table["hindsight_rule"].iloc[0] in engine.rule_names()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [d.get("name") for d in spec["data"] if d.get("showlegend", True) is not False]
    assert names[0] == "dqn" and names[1].startswith("hindsight best (") and names[2] == "capacity bound"
    assert spec["data"][0]["x"] == [1, 2]  # K = 2 episodes a trial


def test_results_browser_bad_paths(run_dir, tmp_path):
    at = app("Results browser")
    at.text_input(key="results_path").set_value(str(tmp_path / "missing")).run()
    one_error(at, "no such file or folder")
    (tmp_path / "empty").mkdir()
    at.text_input(key="results_path").set_value(str(tmp_path / "empty")).run()
    one_error(at, "no results.json found")
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text('{"schema": 1, "method": ')
    at.text_input(key="results_path").set_value(str(bad.parent)).run()
    one_error(at, "malformed JSON")
    bad.write_text(json.dumps({"schema": 1, "method": "x"}))
    at.text_input(key="results_path").set_value(str(bad)).run()
    one_error(at, "suite: missing")


def test_stopping_the_app_stops_its_streamlit_server():
    """``python -m dreamalloc.app`` runs streamlit as a child: terminating it (as a supervisor or the browser test's
    ``app_server`` does) must stop the server too, not leave it serving as an orphan."""
    import urllib.request

    from dreamalloc.app.browser import app_server

    with app_server() as url:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as r:
            assert r.status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
