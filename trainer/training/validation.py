"""The validation pass that ends an epoch: online-probe metrics over the whole validation split, all ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist

from trainer.data import to_device
from trainer.metric_names import VAL_EFF_RANK
from trainer.stats import effective_rank
from trainer.training.parallel import unwrap
from trainer.training.precision import autocast
from trainer.training.probes import ProbeMetrics, probe_features
from trainer.training.state import TrainState

RANK_SAMPLES = 2048  # encoder outputs per rank for the effective-rank monitor


@torch.no_grad()
def validate(state: TrainState, loader, normalise: tuple[torch.Tensor, torch.Tensor], action_groups: dict,
             max_batches: int | None, bf16: bool) -> dict[str, float]:
    """Probe metrics and the collapse monitor over the validation split.

    Every rank runs the same number of forwards (FSDP2 forwards are collective); a rank whose share ran out
    repeats its last batch with weight 0.
    """
    state.model.eval()
    state.probes.eval()
    n_batches = torch.tensor(len(loader), device=state.device)
    if dist.is_initialized():
        dist.all_reduce(n_batches, op=dist.ReduceOp.MAX)
    n_batches = int(n_batches) if max_batches is None else min(int(n_batches), max_batches)
    metrics = ProbeMetrics(action_groups, state.device, unwrap(state.probes).kinds)
    features = {"enc": [], "agg": []}
    iterator, batch = iter(loader), None
    for _ in range(n_batches):
        nxt = next(iterator, None)
        weight = 1.0 if nxt is not None else 0.0
        batch = to_device(nxt, state.device, *normalise, loader.composer) if nxt is not None else batch
        rel_actions = batch["rel_actions"]
        with autocast(state.device, bf16):
            out = state.model(batch["views"], rel_actions, batch["actions"])
        pred = state.probes(probe_features(out))
        metrics.update(pred, batch["label"], rel_actions[:, 0].float(), out.loss.float(), weight)
        if weight and sum(len(f) for f in features["enc"]) < RANK_SAMPLES:
            features["enc"].append(out.z1.float())
            if out.z_agg is not None:
                features["agg"].append(out.z_agg.float())
    state.model.train()
    state.probes.train()
    result = metrics.compute()
    for kind, rows in features.items():
        if rows:
            result[VAL_EFF_RANK[kind]] = effective_rank(torch.cat(rows))
    return result
