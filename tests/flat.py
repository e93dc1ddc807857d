"""A model's parameters as one flat vector, for dense references (autograd Hessians, Jacobians)."""

from __future__ import annotations


def flat_parameters(model, names):
    """flat θ_S ↦ the model's parameter (and buffer) dict with the selected parameters taken from
    `flat`, the others fixed — for torch.func.functional_call."""
    fixed = {n: p.detach() for n, p in model.named_parameters()} | dict(model.named_buffers())
    shapes = [(n, fixed[n].shape, fixed[n].numel()) for n in names]

    def with_flat(flat):
        params, i = dict(fixed), 0
        for n, shape, k in shapes:
            params[n] = flat[i:i + k].view(shape)
            i += k
        return params
    return with_flat
