"""`train.compile`: torch.compile block by block, in place, before sharding (as torchtitan does under FSDP2).

The compiled units are the ones FSDP2 shards one by one: each block of the online encoder and of its EMA targets
(which run forward too), and the units the method names (`shard_units`: seq-JEPA's transformer layers, the
baselines' projectors and predictors). FSDP2's per-block all-gathers and hooks stay outside the graphs, and the rest
(the method's glue, the EMA update, the optimizer, the probes) stays eager.

Only each unit's `forward` is replaced, on the instance: the module tree and the state-dict keys are unchanged, so
a compiled run's checkpoint loads in an eager run and back.

Shapes are static (`dynamic=False`): the training loader drops the last partial batch, so a step's shapes repeat
and reduce-overhead mode can replay CUDA graphs. A shape seen later (validation in eval mode and its tail batch, a
training batch left short by a corrupt sample) compiles once more for the units it reaches, never again after.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.methods.base import Method
from trainer.model import encoder_blocks
from trainer.training.parallel import per_block_encoders


def compiled_units(model: Method) -> list[nn.Module]:
    """The modules `compile_model` compiles: the encoders' blocks, then the method's shard units."""
    blocks = [block for encoder in per_block_encoders(model) for block in encoder_blocks(encoder)]
    return blocks + list(model.shard_units())


def compile_model(model: Method, mode: str | None) -> int:
    """Compile `model`'s units in place (`mode`: torch.compile's, None: its default); returns how many."""
    # nn.TransformerEncoderLayer's inference fast path (eval mode, no grad: validation) is one fused op that casts
    # nothing under CPU autocast; in eager the matmuls inside it are cast, traced into a graph they are not, and a
    # bf16 validation fails (bf16 input, fp32 weights). The standard path is the same computation, which inductor
    # fuses anyway. A process-wide switch: the training process.
    torch.backends.mha.set_fastpath_enabled(False)
    units = compiled_units(model)
    for unit in units:
        compile_forward(unit, mode)
    return len(units)


def compile_forward(module: nn.Module, mode: str | None) -> None:
    forward = module.forward

    def compiled_forward(*args, **kwargs):
        return forward(*args, **kwargs)

    # A code object of its own per module. Dynamo keeps a code object's graphs in one cache with a limit of 8
    # (torch._dynamo.config.recompile_limit); shared by all blocks, their shapes and grad modes would overflow it
    # and the rest would run eager. And a frame of ours to start from: dynamo skips torch.nn's own frames, so
    # `Module.compile()` of an nn.Sequential or nn.TransformerEncoderLayer compiles nothing (pytorch#150915).
    compiled_forward.__code__ = compiled_forward.__code__.replace(co_name=f"compiled_{type(module).__name__}")
    module.forward = torch.compile(compiled_forward, mode=mode, dynamic=False)
