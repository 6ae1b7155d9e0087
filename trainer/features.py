"""Features of a frozen seq-JEPA, extracted once per split and cached for the offline probes (spec §4.3).

For each sequence of K views: the encoder output of every view, z_AGG after the first k views for
every inference length k = 1..K (one aggregator pass each; there is no positional encoding, so any
k works), z_AGG of view 2 alone (the leakage probe pairs it with z_AGG of view 1 alone), the
relative action view 1 -> view 2 and the label.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from tqdm import tqdm

from trainer.data import normalisation, to_model_inputs
from trainer.model import SeqJEPA


@dataclass
class SplitFeatures:
    z_enc: torch.Tensor  # (N, 2, D) encoder outputs of views 1 and 2
    z_agg: torch.Tensor  # (K, N, E) z_AGG of the first k views, k = 1..K
    z_agg_view2: torch.Tensor  # (N, E) z_AGG of view 2 alone
    action: torch.Tensor  # (N, A) relative action view 1 -> view 2
    label: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return len(self.label)


@torch.no_grad()
def extract_features(model: SeqJEPA, loader, max_seq_len: int, limit: int | None, device: torch.device,
                     autocast: bool, desc: str) -> SplitFeatures:
    """One pass over `loader` (batches of at least max(2, max_seq_len) views), up to `limit` sequences."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("z_enc", "z_agg", "z_agg_view2", "action", "label")}
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    mean, std = normalisation(loader, device)
    seen = 0
    with tqdm(total=limit, desc=desc, unit="seq") as bar:
        for batch in loader:
            views, _, rel_actions = to_model_inputs(batch, device, mean, std)  # all but the last view
            views, rel_actions = views[:, :max(2, max_seq_len)], rel_actions[:, :max(2, max_seq_len)]
            B, K = views.shape[:2]
            with amp:
                z = model.encoder(views.flatten(0, 1)).view(B, K, -1)
                z_agg = [model.aggregate(z[:, :k], rel_actions[:, :k]) for k in range(1, max_seq_len + 1)]
                view2 = model.aggregate(z[:, 1:2], rel_actions[:, 1:2])
            parts["z_enc"].append(z[:, :2].float().cpu())
            parts["z_agg"].append(torch.stack(z_agg).float().cpu())
            parts["z_agg_view2"].append(view2.float().cpu())
            parts["action"].append(rel_actions[:, 0].float().cpu())
            parts["label"].append(batch["label"])
            seen += B
            bar.update(B)
            if limit is not None and seen >= limit:
                break
    stop = limit if limit is not None else seen
    return SplitFeatures(z_enc=torch.cat(parts["z_enc"])[:stop], z_agg=torch.cat(parts["z_agg"], dim=1)[:, :stop],
                         z_agg_view2=torch.cat(parts["z_agg_view2"])[:stop], action=torch.cat(parts["action"])[:stop],
                         label=torch.cat(parts["label"])[:stop])
