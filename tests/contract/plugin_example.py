"""A new unlearning method from one file: the example of adding a method to the registry.

Importing this file registers `damped_newton` for table models. Nothing else changes: the
contract suite (tests/contract/) loads every `plugin_*.py` beside it and runs its checks over the
method, and a project uses it in a real forget by naming the file in UNLEARNFLOW_PLUGINS:

    UNLEARNFLOW_PLUGINS=tests/contract/plugin_example.py unlearn forget REQUEST.yaml --method damped_newton
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from unlearning import registry
from unlearning.tabular import influence
from unlearning.tabular.methods import Result
from unlearning.tabular.problem import Problem


class DampedNewtonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fraction: float = Field(0.5, gt=0, le=1, description="share of the Newton step θ* → θ* − H⁻¹G taken")


@registry.register("tabular", "damped_newton", "empirical", DampedNewtonConfig)
def damped_newton(p: Problem, cfg: DampedNewtonConfig) -> Result:
    """θ* − f·H⁻¹G: a shrunk second-order step (a small variation of second_order)."""
    newton = influence.second_order_update(p, "auto", "exact", refine_steps=0)
    theta = p.theta + cfg.fraction * (newton.theta - p.theta)
    return Result(theta=theta, method="damped_newton", guarantee="empirical",
                  stats={"fraction": cfg.fraction, "solver": newton.solver})
