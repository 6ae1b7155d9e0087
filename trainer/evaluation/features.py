"""Features of a frozen model, extracted once per split for the offline probes
(docs/paper-and-original-code.md#original-aggregate-evaluation, #path-integration).

For each sequence: the encoder outputs of views 1 and 2, the relative action view 1 -> view 2, view 1's
absolute action and the label. A method with an aggregate (seq-JEPA) adds z_AGG after the first M views for every
inference length M in eval.seq_lens (one aggregator pass each; there is no positional encoding, so
any M works) and z_AGG of view 1 alone and of view 2 alone (the leakage probe's pair). For path integration,
per M: z_AGG of the first M views with every token carrying its action (the last one included),
the same with the encoder outputs replaced by zeros (the no-vision control), and the net action
view 1 -> view M+1 (the batch's `path_actions`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm import tqdm

from trainer.data import normalisation, to_device
from trainer.methods.base import Method


@dataclass
class SplitFeatures:
    z_enc: torch.Tensor  # (N, 2, D) encoder outputs of views 1 and 2
    action: torch.Tensor  # (N, A) relative action view 1 -> view 2
    abs_action: torch.Tensor  # (N, A) absolute action of view 1
    label: torch.Tensor  # (N,)
    # A method with an aggregate (seq-JEPA) only:
    z_agg: Optional[torch.Tensor] = None  # (K, N, E) z_AGG of the first M views, M = seq_lens[k]
    z_agg_view1: Optional[torch.Tensor] = None  # (N, E) z_AGG of view 1 alone
    z_agg_view2: Optional[torch.Tensor] = None  # (N, E) z_AGG of view 2 alone
    z_path: Optional[torch.Tensor] = None  # (K, N, E) z_AGG of the first M views, every token with its action
    z_path_no_vision: Optional[torch.Tensor] = None  # (K, N, E) the same from zero encoder outputs
    path_action: Optional[torch.Tensor] = None  # (K, N, A) net action view 1 -> view M+1

    def __len__(self) -> int:
        return len(self.label)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Tensors laid out (K, N, ...): the sample axis is the second.
_PER_LENGTH = {"z_agg", "z_path", "z_path_no_vision", "path_action"}


@torch.no_grad()
def extract_features(model: Method, loader, seq_lens: list[int], limit: int | None, device: torch.device,
                     autocast: bool, desc: str) -> SplitFeatures:
    """One pass over `loader` (batches of more than max(2, max(seq_lens)) views), up to `limit` sequences."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {f.name: [] for f in dataclasses.fields(SplitFeatures)}
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    mean, std = normalisation(loader, device)
    observed = max(2, max(seq_lens)) if model.has_aggregate else 2  # the views the features read
    seen = 0
    with tqdm(total=limit, desc=desc, unit="seq") as bar:
        for batch in loader:
            batch = to_device(batch, device, mean, std)
            views, rel_actions = batch["views"][:, :observed], batch["rel_actions"][:, :observed]  # not the last
            actions = batch["actions"]
            B = views.shape[0]
            with amp:
                z = model.encoder(views.flatten(0, 1)).view(B, observed, -1)
                new = {"z_enc": z[:, :2], "action": rel_actions[:, 0], "abs_action": batch["actions"][:, 0],
                       "label": batch["label"]}
                if model.has_aggregate:
                    new.update(_aggregate_features(model, z, rel_actions, actions, seq_lens))
                    if "path_actions" in batch:
                        new.update(_path_features(model, z, rel_actions, actions, batch["path_actions"], seq_lens))
            for key, value in new.items():
                parts[key].append(value.float().cpu() if value.is_floating_point() else value.cpu())
            seen += B
            bar.update(B)
            if limit is not None and seen >= limit:
                break
    stop = limit if limit is not None else seen
    return SplitFeatures(**{key: _join(key, chunks, stop) for key, chunks in parts.items()})


def _aggregate_features(model: Method, z: torch.Tensor, rel_actions: torch.Tensor, actions: torch.Tensor,
                        seq_lens: list[int]) -> dict[str, torch.Tensor]:
    """z_AGG of the first m views for each m, and of view 1 alone and view 2 alone (their actions sliced alike)."""
    return {"z_agg": torch.stack([model.aggregate(z[:, :m], rel_actions[:, :m], actions[:, :m]) for m in seq_lens]),
            "z_agg_view1": model.aggregate(z[:, :1], rel_actions[:, :1], actions[:, :1]),
            "z_agg_view2": model.aggregate(z[:, 1:2], rel_actions[:, 1:2], actions[:, 1:2])}


def _path_features(model: Method, z: torch.Tensor, rel_actions: torch.Tensor, actions: torch.Tensor,
                   path_actions: torch.Tensor, seq_lens: list[int]) -> dict[str, torch.Tensor]:
    def aggregates(encoded: torch.Tensor) -> torch.Tensor:
        return torch.stack([model.aggregate(encoded[:, :m], rel_actions[:, :m], actions[:, :m], keep_last_action=True)
                            for m in seq_lens])

    return {"z_path": aggregates(z), "z_path_no_vision": aggregates(torch.zeros_like(z)),
            "path_action": path_actions[:, [m - 1 for m in seq_lens]].transpose(0, 1)}


def _join(key: str, chunks: list[torch.Tensor], stop: int) -> torch.Tensor | None:
    if not chunks:
        return None
    axis = 1 if key in _PER_LENGTH else 0
    joined = torch.cat(chunks, dim=axis)
    return joined.narrow(axis, 0, min(stop, joined.shape[axis])).clone()  # a copy: torch.save keeps a view's storage
