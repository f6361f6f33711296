"""``AllocEnv``: one heap as a gymnasium Env, a thin view of the batched core with B = 1.

Observation: Box(float32) = [bitmap (N), request size, history (n), summary (4), hole features (2k)],
each part optional except the size (see ``AllocConfig``). Action: Discrete, by ``action``:
``heuristic`` (index into ``heuristics``, Lim's order best/worst/first by default), ``address`` (a start
cell; ``info["action_mask"]`` and ``action_masks()`` give the valid ones) or ``hole`` (the k-th free run
that fits, in address order). ``info`` has the heap metrics at every step and ``episode`` {r, l} at the end.
``step`` takes one integer (a Python or numpy int, or a one-element integer array / tensor); anything else
is an ``core.actions.ActionError`` saying what is expected, and ``step`` before ``reset`` a RuntimeError.

On CPU (the default) the env runs on ``alloc.fast.FastAllocCore``, the one-heap fast path (plain Python and numpy
on the same state, proved equal to the torch core by tests/test_fast_env.py); ``fast=False`` (or another device,
or ``on_fail="drop"``, which the fast path does not implement) steps the batched core with B = 1 instead: the
compiled step where it applies (``alloc.jit``), the torch core with ``jit=False`` or outside its scope.
"""

from __future__ import annotations

import numpy as np
import torch

from dreamalloc.alloc.env import AllocConfig, AllocCore
from dreamalloc.alloc.fast import FastAllocCore
from dreamalloc.core.gym_faces import CoreEnv


class AllocEnv(CoreEnv):
    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    CELL_PX = 8  # rgb_array: each heap cell is a CELL_PX square, cells laid out row-major in a near-square grid

    def __init__(self, render_mode: str | None = None, device: str = "cpu", fast: bool = True,
                 jit: bool | None = None, **kwargs):
        cfg = AllocConfig.from_kwargs(**kwargs)
        if fast and torch.device(device).type == "cpu" and cfg.on_fail == "end":  # the fast path's scope
            core = FastAllocCore(cfg)
        else:
            core = AllocCore(1, cfg, device=device, autoreset=False, jit=jit)
        super().__init__(core, core.cfg.obs_bounds(), render_mode)

    def render(self):
        occ = self.core.heaps.occ[0].cpu().numpy().astype(bool)
        if self.render_mode == "rgb_array":
            return heap_image(occ, self.CELL_PX)
        line = "".join("#" if o else "." for o in occ)
        return f"{line}  request={int(self.core.request[0])}"


def heap_image(occ: np.ndarray, px: int = 8) -> np.ndarray:
    """A memory map [H, W, 3] uint8: used cells dark, free cells light, row-major in a near-square grid (video
    recorders and SB3's make_vec_env want rgb_array)."""
    n = len(occ)
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    grid = np.full(rows * cols, 2, np.uint8)  # 2 = padding past the heap's end
    grid[:n] = occ
    palette = np.array([[225, 228, 232], [40, 70, 140], [255, 255, 255]], np.uint8)  # free, used, padding
    img = palette[grid.reshape(rows, cols)]
    return np.repeat(np.repeat(img, px, axis=0), px, axis=1)
