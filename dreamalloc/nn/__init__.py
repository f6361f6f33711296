"""Shared network building blocks, so every agent builds its torsos and heads the same way."""

from dreamalloc.nn.layers import masked_logits, mlp, orthogonal_init

__all__ = ["masked_logits", "mlp", "orthogonal_init"]
