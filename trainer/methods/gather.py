"""All-gather along the batch that carries gradients, so cross-sample loss terms see the global batch.

The paper's code gathered without autograd, so its contrastive losses had no gradient and VICReg/SIE lost
their variance/covariance gradients on more than one GPU (spec §7.A1). Here every rank computes the same loss
on the gathered global batch. Backward sums the gradient w.r.t. the gathered tensor over the W ranks and keeps
this rank's rows: rank r's parameters get W times the gradient flowing through its own samples, and the mean
DDP/FSDP2 take over ranks gives exactly the single-process gradient on the concatenated batch. (The same
backward is right for any per-rank losses: the result is the gradient of their mean.)

Needs the same number of rows on every rank (the loader splits the global batch evenly).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        local = local.contiguous()
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        ctx.rows = local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each (N, d_i) tensor -> (W*N, d_i), rank 0's rows first; one collective for all of them.
    Returns the inputs unchanged when torch.distributed is not initialised or has one rank."""
    if world_size() == 1:
        return tensors
    gathered = _AllGatherRows.apply(torch.cat(tensors, dim=1))
    return tuple(gathered.split([t.shape[1] for t in tensors], dim=1))
