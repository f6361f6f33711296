"""DreamerV3's hyperparameters (Nature version defaults) and their checks.

Sizes follow the presets of the paper (conf/agent/dreamer_{1m,12m,25m,50m}.yaml); the defaults here are the
12M preset. ``train_ratio`` is defined in exactly one place, here: it is the number of *replayed* steps per
*env* step (one env step = one transition of one env, i.e. a batched env of 16 heaps makes 16 per call), so
one gradient update (``batch_size`` x ``batch_length`` replayed steps) happens every
``batch_size * batch_length / train_ratio`` env steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dreamalloc.core.checks import COUNT, FINITE, NONNEG, POSITIVE, UNIT, OneOf, between

OPTIMIZERS = ("laprop", "adam")
PRECISIONS = ("fp32", "bf16")
RESETS = ("trial", "episode")
REPLAY_LATENTS = ("float32", "bfloat16", "float16")
GREEDY_LATENTS = ("mode", "sample")


@dataclass
class DreamerConfig:
    RANGES: ClassVar[dict] = {  # checked at start by the harness (dreamalloc/core/checks.py); ``check`` adds the rest
        **{k: COUNT for k in ("deter", "hidden", "stoch", "classes", "blocks", "units", "enc_layers", "bins",
                              "imag_length", "horizon", "batch_size", "batch_length", "replay_size")},
        "dec_layers": NONNEG, "head_layers": NONNEG, "ac_layers": NONNEG,
        "unimix": between(0.0, 1.0, hi_open=True), "free_nats": NONNEG, "kl_dyn": NONNEG, "kl_rep": NONNEG,
        "loss_rec": NONNEG, "loss_rew": NONNEG, "loss_con": NONNEG, "imag_last": NONNEG, "ac_gru": NONNEG,
        "lam": UNIT,
        "actent": NONNEG, "actent_end": NONNEG, "actent_decay": NONNEG, "slowreg": NONNEG,
        "slow_rate": between(0.0, 1.0, lo_open=True),
        "retnorm_rate": between(0.0, 1.0, lo_open=True), "retnorm_limit": POSITIVE, "loss_policy": NONNEG,
        "loss_value": NONNEG, "loss_repval": NONNEG, "optimizer": OneOf(OPTIMIZERS), "lr": POSITIVE,
        "eps": POSITIVE, "beta1": between(0.0, 1.0, hi_open=True), "beta2": between(0.0, 1.0, hi_open=True),
        "agc": FINITE, "warmup": NONNEG, "train_ratio": POSITIVE, "learning_starts": NONNEG,
        "precision": OneOf(PRECISIONS), "reset_at": OneOf(RESETS), "replay_latents": OneOf(REPLAY_LATENTS),
        "greedy_latent": OneOf(GREEDY_LATENTS), "greedy_ema": between(0.0, 1.0, hi_open=True), "greedy_plan": NONNEG}
    name: str = "dreamer"
    # --- sizes (12M preset) ---
    deter: int = 2048
    hidden: int = 256
    stoch: int = 32
    classes: int = 16
    blocks: int = 8
    units: int = 256
    enc_layers: int = 3
    dec_layers: int = 3
    head_layers: int = 1  # reward and continue heads
    ac_layers: int = 3  # actor and critic
    bins: int = 255
    unimix: float = 0.01
    # --- world model loss ---
    free_nats: float = 1.0
    kl_dyn: float = 1.0  # 0.5 in the 2023 version
    kl_rep: float = 0.1
    loss_rec: float = 1.0
    loss_rew: float = 1.0
    loss_con: float = 1.0
    # --- actor-critic in imagination ---
    imag_length: int = 15
    imag_last: int = 0  # imagine from the last K steps of each replayed sequence only (0: from all of them)
    horizon: int = 333  # discount = 1 - 1 / horizon (folded into the continue target)
    lam: float = 0.95
    actent: float = 3e-4
    # > 0: the entropy scale falls linearly from actent to actent_end over this many env steps, then stays there
    # (a broad policy early against collapse onto one action, a sharper one late); 0: constant actent
    actent_decay: int = 0
    actent_end: float = 3e-4
    slowreg: float = 1.0  # critic regulariser towards the slow EMA critic
    slow_rate: float = 0.02
    retnorm_rate: float = 0.01
    retnorm_limit: float = 1.0
    loss_policy: float = 1.0
    loss_value: float = 1.0
    loss_repval: float = 0.3  # value loss on replayed sequences (bootstrapped from the imagined returns)
    # --- optimiser (one for all networks) ---
    optimizer: str = "laprop"  # laprop | adam
    lr: float = 4e-5
    eps: float = 1e-20
    beta1: float = 0.9
    beta2: float = 0.999
    agc: float = 0.3  # adaptive gradient clipping; <= 0: off
    warmup: int = 1000  # updates of linear learning-rate warm-up
    # --- replay and update schedule ---
    batch_size: int = 16
    batch_length: int = 64
    train_ratio: float = 32.0  # replayed steps per env step (see the module docstring)
    replay_size: int = 1_000_000  # records, all envs together (an upper bound: the replay grows with the data)
    replay_latents: str = "float32"  # storage of the replayed deterministic latents: float32 | bfloat16 | float16
    learning_starts: int = 1024  # env steps before the first update
    replay_context: bool = True  # start training sequences from the stored latent of the previous step
    # --- meta-RL (RL^2 on the world model; docs/rl2.md) ---
    meta: bool = False  # the trial is the unit: inner episode ends are neither is_first nor terminal (see agent.py)
    reset_at: str = "trial"  # trial | episode: where the RSSM state is zeroed, acting and replayed
    ac_gru: int = 0  # > 0: a GRU of this many units between the latent and the actor / critic (RL^2's policy)
    # --- acting ---
    greedy_latent: str = "mode"  # deterministic acting (evaluation): the posterior's mode (mode) or a draw (sample)
    # > 0: deterministic acting (evaluation, exports) uses an exponential moving average of the acting weights
    # (encoder, RSSM, actor, GRU) with this decay per update (0.999: about the last 1,000 updates); 0: off
    greedy_ema: float = 0.0
    # > 0: deterministic acting takes the argmax over actions of a one-step lookahead through the world model,
    # reward + continue x value averaged over this many draws of the prior's latent (plan.py; single Discrete
    # action spaces); 0: the actor's mode
    greedy_plan: int = 0
    # --- speed ---
    compile: bool = False  # torch.compile the posterior step (CPU and CUDA) and the prior step (CUDA)
    precision: str = "fp32"  # fp32 | bf16 (autocast; CUDA only, fp32 elsewhere)


@dataclass
class DreamerRL2Config(DreamerConfig):
    """The same hyperparameters, with the trial as the unit (``meta``) by default."""

    name: str = "dreamer_rl2"
    meta: bool = True


def check(c: DreamerConfig) -> DreamerConfig:
    def bad(msg):
        raise ValueError(f"agent=dreamer: {msg}")

    for k in ("deter", "hidden", "stoch", "classes", "blocks", "units", "enc_layers", "bins", "imag_length",
              "horizon", "batch_size", "batch_length", "replay_size"):
        if int(getattr(c, k)) < 1:
            bad(f"{k} must be >= 1, got {getattr(c, k)}")
    if c.deter % c.blocks:
        bad(f"deter ({c.deter}) must be a multiple of blocks ({c.blocks})")
    if c.bins % 2 == 0:
        bad(f"bins must be odd (symmetric around 0), got {c.bins}")
    if c.optimizer not in OPTIMIZERS:
        bad(f"unknown optimizer {c.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if c.precision not in PRECISIONS:
        bad(f"unknown precision {c.precision!r}; choose one of {', '.join(PRECISIONS)}")
    if c.train_ratio <= 0 or c.lr <= 0:
        bad(f"train_ratio and lr must be > 0, got {c.train_ratio} and {c.lr}")
    if not 0.0 <= c.lam <= 1.0 or not 0.0 <= c.unimix < 1.0:
        bad(f"lam must be in [0, 1] and unimix in [0, 1), got {c.lam} and {c.unimix}")
    if int(c.ac_gru) < 0:
        bad(f"ac_gru must be >= 0 (0: no recurrent actor-critic), got {c.ac_gru}")
    if c.replay_latents not in REPLAY_LATENTS:
        bad(f"unknown replay_latents {c.replay_latents!r}; choose one of {', '.join(REPLAY_LATENTS)}")
    if c.greedy_latent not in GREEDY_LATENTS:
        bad(f"unknown greedy_latent {c.greedy_latent!r}; choose one of {', '.join(GREEDY_LATENTS)}")
    if not 0.0 <= c.greedy_ema < 1.0:
        bad(f"greedy_ema must be in [0, 1) (0: off), got {c.greedy_ema}")
    if isinstance(c.greedy_plan, bool) or int(c.greedy_plan) != c.greedy_plan or c.greedy_plan < 0:
        bad(f"greedy_plan must be an integer >= 0 (draws per action; 0: act on the actor), got {c.greedy_plan!r}")
    if c.reset_at not in RESETS:
        bad(f"unknown reset_at {c.reset_at!r}; choose one of {', '.join(RESETS)}")
    if not isinstance(c.meta, bool):
        bad(f"meta must be true or false, got {c.meta!r}")
    return c


__all__ = ["GREEDY_LATENTS", "OPTIMIZERS", "PRECISIONS", "REPLAY_LATENTS", "RESETS", "DreamerConfig",
           "DreamerRL2Config", "check"]
