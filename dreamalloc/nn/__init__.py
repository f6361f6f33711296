"""Shared network building blocks, so every agent builds its torsos and heads the same way.

May import: torch, numpy. Nothing else of dreamalloc (a library the agents use).
"""

from dreamalloc.nn.dense import dense, norm_mlp, norm_mlps, trunc_normal_in_
from dreamalloc.nn.layers import masked_logits, mlp, orthogonal_init
from dreamalloc.nn.normalize import PercentileNormalizer
from dreamalloc.nn.norms import RMSNorm
from dreamalloc.nn.optim import LaProp, adaptive_clip_
from dreamalloc.nn.twohot import symexp, symexp_bins, symlog, twohot, twohot_loss, twohot_mean

__all__ = ["LaProp", "PercentileNormalizer", "RMSNorm", "adaptive_clip_", "dense", "masked_logits", "mlp",
           "norm_mlp", "norm_mlps", "orthogonal_init", "symexp", "symexp_bins", "symlog", "trunc_normal_in_", "twohot",
           "twohot_loss", "twohot_mean"]
