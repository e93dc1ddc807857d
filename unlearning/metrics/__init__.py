"""Evaluation metrics for unlearning (science.md §4–5): pure numpy/torch/sklearn, no I/O."""

from unlearning.metrics.alignment import da_score, dimensional_alignment, retain_basis

__all__ = ["da_score", "dimensional_alignment", "retain_basis"]
