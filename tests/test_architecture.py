"""The package structure stays as designed: imports run one way (core <- domains <- agents <- experiment; nn and
report import none of them), checked by import-linter against the contracts in pyproject.toml."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def _defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def test_config_files_hold_only_overrides_of_the_schema_defaults():
    """Defaults live once, in the dataclasses: a group's YAML file sets only what differs from its schema."""
    from dreamalloc.agents import agent_classes
    from dreamalloc.core.family import FAMILIES
    from dreamalloc.experiment.config import LoggerConf

    schemas = {"agent": lambda n: agent_classes()[n].Config, "env": lambda n: FAMILIES[n].schema,
               "logger": lambda n: LoggerConf}
    checked, repeated = 0, []
    for path in sorted((ROOT / "conf").glob("*/*.yaml")):
        m = re.search(r"/schema/(\w+)/(\w+)@_here_", path.read_text())
        if not m or m.group(1) not in schemas:
            continue
        defaults = _defaults(schemas[m.group(1)](m.group(2)))
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            if key in ("defaults", "name", "kind") or key not in defaults:
                continue
            d = list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]
            if value == d and type(value) is type(d):
                repeated.append(f"{path.relative_to(ROOT)}: {key}: {value!r}")
        checked += 1
    assert checked >= 10
    assert not repeated, "config files repeat their schema's defaults: " + "; ".join(repeated)


def test_a_checkpoint_written_before_the_families_still_loads():
    """tests/data/pre_families_a2c_lb.safetensors was written by the code before the batched-core redesign
    (commit c17aa1c: python train.py experiment=redovian2025_standard agent=a2c env.num_envs=2 env.num_jobs=32
    steps=256): its agent, meta and env state load into today's classes, and the agent acts."""
    import torch

    import dreamalloc
    from dreamalloc.experiment.checkpoint import load_checkpoint
    from dreamalloc.experiment.config import make_core

    path = ROOT / "tests" / "data" / "pre_families_a2c_lb.safetensors"
    policy = dreamalloc.load_agent(path)
    assert policy.meta["agent"] == "a2c" and policy.meta["action_space"] == "server" and policy.step == 256
    payload = load_checkpoint(path)
    core = make_core(policy.config.env, policy.config.suite.train, 2, "cpu")
    core.load_state_dict(payload["env"])
    obs, info = core.current()
    assert obs.shape == (2, policy.obs_dim) and bool((core.episode >= 0).all())
    action, _ = policy.predict(obs, info={k: v for k, v in info.items() if isinstance(v, torch.Tensor)})
    assert action.shape == (2,) and ((action >= 0) & (action < 10)).all()
    obs2, reward, *_ = core.step(torch.as_tensor(action))
    assert torch.isfinite(reward).all()

