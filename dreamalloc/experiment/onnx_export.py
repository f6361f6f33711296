"""A trained policy's decision as an ONNX file, and ``OnnxPolicy`` to run it with ONNX Runtime: what an allocator
that asks a policy once per request would embed (the file needs ONNX Runtime alone, no torch or Hydra; tens of
microseconds a decision).

    python scripts/export_policy.py RUN_DIR --onnx policy.onnx        # dqn, ppo, a2c, rl2_ppo, dreamer(_rl2)

    from dreamalloc.experiment.onnx_export import OnnxPolicy
    policy = OnnxPolicy("policy.onnx")                   # one thread
    action, state = policy.predict(obs)                  # a fresh trial: state None
    action, state = policy.predict(obs, state, start=trial_start, mask=info["action_mask"])

The file holds the agent's ``acting_step`` (``agents.base.ActingStep``): the deterministic decision at batch 1,
as ``evaluate.py`` takes it, with the recurrent state as explicit inputs and outputs (which output feeds which
input is in the model's metadata, key ``dreamalloc``) and, for Dreamer, the Gumbel noise of its latent draw as an
input that ``OnnxPolicy`` draws. ``export_onnx`` checks the file before it keeps it: ONNX Runtime and the torch
module must take the same actions (and carry the same state, to 1e-4) on observations of the run's own env.
Needs the ``export`` extra (``pip install -e '.[export]'``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from dreamalloc.experiment.logging import _atomic_write_bytes

OPSET = 21  # ONNX Runtime 1.32 runs every op the steps need at this opset
META_KEY = "dreamalloc"


class ExportError(RuntimeError):
    """The export failed or does not act as the agent does; nothing was written."""


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"ONNX export needs {module}: pip install -e '.[export]' (onnx, onnxscript, "
                          f"onnxruntime)") from e


def export_onnx(path: str | os.PathLike, out: str | os.PathLike | None = None, check_steps: int = 64) -> Path:
    """Write the decision of the agent a checkpoint holds (``path``: a checkpoint, policy export, folder or run
    directory, as ``load_agent`` takes) to ``out`` (default ``policy_{step}.onnx`` beside the checkpoint), after
    checking it over ``check_steps`` steps of the run's env. Returns the path written."""
    from dreamalloc.experiment.config import make_core
    from dreamalloc.experiment.inference import load_agent

    loaded = load_agent(path, device="cpu")
    out = Path(out) if out is not None else loaded.path.with_name(f"policy_{loaded.step}.onnx")
    if out.suffix != ".onnx":
        raise ValueError(f"export_onnx: {out} must end in .onnx")
    core = make_core(loaded.config.env, loaded.config.suite.train, 1, torch.device("cpu"))
    data = onnx_model(loaded.agent, core, {"agent": loaded.meta.get("agent"), "step": loaded.step}, check_steps)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out, data)
    return out


def onnx_model(agent, core, meta: dict | None = None, check_steps: int = 64) -> bytes:
    """The serialised ONNX model of ``agent.acting_step`` (masked where ``core``'s info has action masks), checked
    against the torch module over ``check_steps`` steps of ``core`` (one env); ``meta`` goes into its metadata."""
    onnx = _need("onnx")
    _need("onnxscript")
    obs, info = core.reset(seed=0)
    step = agent.acting_step("action_mask" in info)  # NotImplementedError names agents without one
    module = step.module.eval()
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # "no torchvision"
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the exporter's progress lines and pytree deprecations
        program = torch.onnx.export(module, tuple(step.inputs.values()), input_names=list(step.inputs),
                                    output_names=list(step.outputs), dynamo=True, opset_version=OPSET,
                                    external_data=False, verbose=False)
    model = program.model_proto
    props = {**(meta or {}), "obs_dim": agent.obs_dim, "carry": step.carry, "opset": OPSET}
    onnx.helper.set_model_props(model, {META_KEY: json.dumps(props)})
    data = model.SerializeToString()
    _check(OnnxPolicy(data), module, step, core, obs, info, agent, check_steps)
    return data


def _check(policy: OnnxPolicy, module, step, core, obs, info, agent, n: int) -> None:
    """Step the env with the torch module's actions; ONNX Runtime must agree at every step."""
    state = {k: v.clone() for k, v in step.inputs.items() if k in step.carry.values()}
    gen = np.random.default_rng(0)
    for t in range(n):
        start = t == 0 or bool(info.get("trial_start", info.get("episode_start", torch.zeros(1)))[0])
        feeds = {"obs": obs.float(), **state}
        if "start" in step.inputs:
            feeds["start"] = torch.tensor([start])
        if "noise" in step.inputs:
            feeds["noise"] = torch.from_numpy(policy.gumbel(gen))
        if "mask" in step.inputs:
            feeds["mask"] = torch.as_tensor(info["action_mask"]).to(torch.bool).reshape(1, -1)
        with torch.no_grad():
            ref = module(*(feeds[k] for k in step.inputs))
        got = policy.session.run(None, {k: v.numpy() for k, v in feeds.items()})
        if not np.array_equal(got[0], ref[0].numpy()):
            raise ExportError(f"export_onnx: ONNX Runtime chose action {got[0].tolist()} where the {agent.name} "
                              f"agent chose {ref[0].tolist()} (env step {t}); nothing written")
        for name, a, b in zip(step.outputs[1:], got[1:], ref[1:], strict=True):
            if not np.allclose(a, b.numpy(), atol=1e-4, rtol=1e-4):
                raise ExportError(f"export_onnx: output {name} differs from the {agent.name} agent's by "
                                  f"{np.abs(a - b.numpy()).max():.3g} at env step {t}; nothing written")
        state = {step.carry[name]: v for name, v in zip(step.outputs[1:], ref[1:], strict=True)}
        obs, _, _, _, info = core.step(ref[0])


class OnnxPolicy:
    """An exported decision under ONNX Runtime. ``predict(obs, state, start, mask)`` -> (action, state):
    ``obs`` [obs_dim] (numpy), ``state`` what the previous call returned (None: a fresh trial), ``start`` True
    where a trial starts (for non-meta Dreamer, an episode), ``mask`` the env's action mask where the action
    space has one, ``noise`` Dreamer's Gumbel noise when the caller draws it (else drawn from ``rng``, seeded
    with ``seed``). The action is a numpy int64 scalar ([D] for MultiDiscrete); batch 1 only."""

    def __init__(self, model: str | os.PathLike | bytes, threads: int = 1, seed: int | None = 0):
        ort = _need("onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = int(threads)
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        src = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
        custom = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in custom:
            raise ValueError(f"OnnxPolicy: {model if not isinstance(model, bytes) else 'the model'} was not written "
                             "by export_onnx (no dreamalloc metadata)")
        self.meta = json.loads(custom[META_KEY])
        self.carry: dict[str, str] = self.meta["carry"]
        spec = {i.name: i for i in self.session.get_inputs()}
        self.input_names = list(spec)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._zeros = {k: np.zeros(spec[k].shape, np.float32) for k in self.carry.values()}
        self._noise_shape = tuple(spec["noise"].shape) if "noise" in spec else None
        self._tiny = np.finfo(np.float32).tiny
        self.rng = np.random.default_rng(seed)
        self._true, self._false = np.ones(1, bool), np.zeros(1, bool)

    def gumbel(self, rng: np.random.Generator | None = None) -> np.ndarray:
        u = (rng or self.rng).random(self._noise_shape, dtype=np.float32)
        return -np.log(-np.log(np.maximum(u, self._tiny)))

    def initial_state(self) -> dict[str, np.ndarray] | None:
        return {k: v.copy() for k, v in self._zeros.items()} or None

    def predict(self, obs, state: dict | None = None, start: bool = False, mask=None, noise=None):
        feeds = {"obs": np.asarray(obs, np.float32).reshape(1, -1)}
        if state is None:
            state, start = self._zeros, True
        if self.carry:
            feeds.update(state)
        if "start" in self.input_names:
            feeds["start"] = self._true if start else self._false
        if self._noise_shape is not None:
            feeds["noise"] = self.gumbel() if noise is None else np.asarray(noise, np.float32)
        if "mask" in self.input_names:
            if mask is None:
                raise ValueError("OnnxPolicy.predict: this policy's action space is masked: pass mask= (the env's "
                                 "info['action_mask'])")
            feeds["mask"] = np.asarray(mask, bool).reshape(1, -1)
        out = self.session.run(None, feeds)
        new = {self.carry[n]: v for n, v in zip(self.output_names[1:], out[1:], strict=True)} or None
        return out[0][0], new


__all__ = ["ExportError", "OnnxPolicy", "export_onnx", "onnx_model"]
