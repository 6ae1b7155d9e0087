"""Path integration (docs/paper-and-original-code.md#path-integration, fig. path_int_fig): does z_AGG know the net
transformation along the path it saw?

The definition the paper notes recommend (docs/paper-and-original-code.md#path-integration). For each inference length
M = M_val in eval.seq_lens: z_AGG of the first M views where every token carries its outgoing action a_1..a_M (none
zeroed, the last included: `SeqJEPA.aggregate(..., keep_last_action=True)`), so z_AGG has seen every step of the path
from view 1 to view M+1. Target: the net action view 1 -> view M+1, the batch's `path_actions`, composed the way
the dataset composes one step (3DIEBench: the rotation R_1^-1 R_{M+1}; glimpses: the net saccade
displacement; affine/augmentation sources: summed parameter differences, angles via cos/sin of the
net angle). Probe: a linear head on frozen z_AGG, one per M, trained like every offline probe.

    eval/path/r2/M{k}[/group]             R² of the model; the headline is over the telling group's dims
                                          (rotation if the actions have one, else position, else all)
    eval/path/r2_no_vision/M{k}[/group]   control "no vision": the same model with the encoder outputs
                                          replaced by zeros before aggregation (what the actions alone give)

The figure's third curve, "no action conditioning", is a model trained with seq_jepa.action_cond=false:
its own evaluation logs these same `eval/path/...` metrics (its tokens carry no actions, so its z_AGG
can know the path only from what it saw).
"""

from __future__ import annotations

import torch

from trainer.config import EvalConfig
from trainer.evaluation.features import SplitFeatures
from trainer.evaluation.probes import fit_linear_regressors
from trainer.stats import summarise_r2

TELLING_GROUPS = ("rotation", "position")  # the first one the actions have is the headline


def path_metrics(train: SplitFeatures, val: SplitFeatures, seq_lens: list[int], groups: dict[str, list[int]],
                 cfg: EvalConfig, generator: torch.Generator, progress=None) -> dict[str, float]:
    """`eval/path/...` for every M; {} when the features hold no path (a source without `path_actions`)."""
    if train.z_path is None or val.z_path is None:
        return {}
    # The model's K probes and the no-vision control's K probes, trained side by side (independent heads).
    x_train = torch.cat([train.z_path, train.z_path_no_vision])
    x_val = torch.cat([val.z_path, val.z_path_no_vision])
    y_train, y_val = train.path_action.repeat(2, 1, 1), val.path_action.repeat(2, 1, 1)
    sse, total = fit_linear_regressors(x_train, y_train, x_val, y_val, cfg, generator, progress)
    metrics = {}
    names = [f"eval/path/{kind}/M{m}" for kind in ("r2", "r2_no_vision") for m in seq_lens]
    for name, head_sse, head_total in zip(names, sse, total):
        metrics.update(_headline(summarise_r2(head_sse, head_total, groups, name), name))
    return metrics


def _headline(metrics: dict[str, float], name: str) -> dict[str, float]:
    """`name` becomes the telling group's R² (all dims without one); the per-group entries stay."""
    telling = next((f"{name}/{g}" for g in TELLING_GROUPS if f"{name}/{g}" in metrics), None)
    if telling is not None:
        metrics[name] = metrics[telling]
    return metrics
