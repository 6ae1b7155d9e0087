"""All-gather along the batch that carries gradients, so cross-sample loss terms see the global batch.

The paper's code gathered without autograd, so its contrastive losses had no gradient and VICReg/SIE lost
their variance/covariance gradients on more than one GPU
(docs/paper-and-original-code.md#a1-no-gradient-sync-across-gpus). Here every rank computes the same loss on the
gathered global batch. Backward sums the gradient w.r.t. the gathered tensor over the W ranks and keeps this rank's
rows: rank r's parameters get W times the gradient flowing through its own samples, and the mean DDP/FSDP2 take over
ranks gives exactly the single-process gradient on the concatenated batch. (The same backward is right for any per-rank
losses: the result is the gradient of their mean.)

Ranks may hold different numbers of rows (a validation split's short last batch, a training batch that lost
a sample that failed to compose): the row counts are exchanged first, which is the one host sync this adds
per call (one small all-gather), and the rows are padded to the largest count for the data all-gather.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator

import torch
import torch.distributed as dist

_LOCAL_ONLY: ContextVar[bool] = ContextVar("gather_rows_local_only", default=False)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextlib.contextmanager
def local_rows_only() -> Iterator[None]:
    """Within it `gather_rows` returns its inputs: a FLOP count on fake tensors must not talk to other ranks."""
    token = _LOCAL_ONLY.set(True)
    try:
        yield
    finally:
        _LOCAL_ONLY.reset(token)


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor, counts: list[int]) -> torch.Tensor:
        most = max(counts)
        padded = torch.cat([local, local.new_zeros(most - local.shape[0], *local.shape[1:])]) if local.shape[0] < most \
            else local.contiguous()
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        rank = dist.get_rank()
        ctx.start, ctx.rows = sum(counts[:rank]), counts[rank]
        return torch.cat([part[:count] for part, count in zip(parts, counts)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start:ctx.start + ctx.rows], None


def row_counts(rows: int, device: torch.device) -> list[int]:
    """Every rank's row count, rank 0's first (one small all-gather, read on the host)."""
    mine = torch.tensor([rows], dtype=torch.int64, device=device)
    counts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, mine)
    return torch.cat(counts).tolist()


def gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each (N_r, d_i) tensor -> (sum of N_r, d_i), rank 0's rows first; one data collective for all of them.
    Returns the inputs unchanged when torch.distributed is not initialised, has one rank, or within
    `local_rows_only()`."""
    if world_size() == 1 or _LOCAL_ONLY.get():
        return tensors
    local = torch.cat(tensors, dim=1)
    gathered = _AllGatherRows.apply(local, row_counts(local.shape[0], local.device))
    return tuple(gathered.split([t.shape[1] for t in tensors], dim=1))
