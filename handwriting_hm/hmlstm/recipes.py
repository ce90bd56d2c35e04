"""Training recipes for boundaries that learn, written once for the language model's and the handwriting
model's tasks (docs/boundaries.md says what each does and what it measured).

The detector settings are the model's (HMLSTM: z_on_copy, copy_gradient, boundary_norm, boundary_bias);
the schedules below are the task's, read at every step (BoundaryRecipes, with the flags of both, is in
recipe_settings, which has no torch):
  rate loss       rate_weight * sum_l (mean p^l - target_l)^2 (detectors.rate_penalty; rate_estimate "hard"
                  counts the firings instead, with p's gradient), for the first
                  rate_steps steps (None: always);
  Bernoulli       sampled boundaries (Eq. 9) for the first bernoulli_steps steps, then the model's own mode.
"""
from __future__ import annotations

from torch import Tensor

from .core import HMLSTMOutput, HMLSTMState, Slope, StackedLSTM, HMLSTM, make_core
from .detectors import rate_penalty
from .recipe_settings import DETECTOR_FLAGS, RECIPE_FLAGS, BoundaryRecipes  # re-exported: clients import them here

__all__ = ["DETECTOR_FLAGS", "RECIPE_FLAGS", "BoundaryRecipes", "core_from_config", "recipe_penalty",
           "with_preactivations"]


def recipe_penalty(recipes: BoundaryRecipes, core: HMLSTMOutput, slope: Slope, z_on_copy: str,
                   initial_z: Tensor | None = None, mask: Tensor | None = None, given: int = 0) -> Tensor:
    """recipes.rate_weight times the firing-rate loss of a forward pass whose output carries pre-activations;
    given: how many of the lowest detectors' boundaries were given (their targets are left out)."""
    if core.preactivations is None:
        raise ValueError("the firing-rate loss needs the boundary pre-activations of the forward pass")
    return recipes.rate_weight * rate_penalty(core.preactivations, core.boundaries, slope, recipes.rate_targets,
                                              z_on_copy, initial_z, mask, given, recipes.rate_estimate)


def core_from_config(config, input_size: int, impl: str) -> HMLSTM | StackedLSTM:
    """The recurrent core a model config describes (its cell, sizes, layer norm and detector settings):
    both models build theirs here."""
    return make_core(config.cell, input_size, config.hidden_sizes, layer_norm=config.layer_norm,
                     boundary_mode=config.boundary_mode, impl=impl, copy_gradient=config.copy_gradient,
                     z_on_copy=config.z_on_copy, boundary_norm=config.boundary_norm,
                     boundary_bias=config.boundary_bias)


def with_preactivations(core: HMLSTM | StackedLSTM, x: Tensor, output: HMLSTMOutput,
                        state: HMLSTMState | None = None) -> HMLSTMOutput:
    """`output` carrying its boundary pre-activations: as the path gave them, else recomputed from x
    (HMLSTM.boundary_preactivations). An LSTM's output is returned as it is."""
    if output.preactivations is not None or not core.num_detectors:
        return output
    return output._replace(preactivations=core.boundary_preactivations(x, output, state))
