"""GPU memory for seq-JEPA training state under DDP and FSDP2: ESTIMATES from the model's parameter counts.

    python infra/sizing.py                     # the tables in infra/README.md
    python infra/sizing.py --gpus 1 2 4 8 16   # other GPU counts

Parameter counts come from the real model code (`trainer.methods.build_model` on the recipes in
trainer/configs/) for the ResNet-18 recipes and the CPU convnet. Larger encoders (ResNet-50, ViT-B/16,
ViT-L/16) are not built by this project: their encoder counts are the published ones, and the
seq-JEPA parts around them (action embedding, aggregator, predictor, EMA target, probes) are built from
the project's code at the encoder's width. The sums follow what the code does: fp32 master weights
(`train.precision=bf16` is autocast: weights, gradients and AdamW states stay fp32), an EMA target
encoder without gradients or optimizer state, probe heads replicated with DDP under both strategies.
Activations are counted separately, by measuring what autograd saves for one sequence on the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

PROJECT_ROOT = Path(__file__).resolve().parents[1]

FP32 = 4  # bytes
GiB = 2**30


class PublishedEncoder(nn.Module):
    """Stands in for an encoder the project does not build: `blocks` equal parameter tensors, its published size."""

    def __init__(self, params: int, out_dim: int, blocks: int):
        super().__init__()
        self.out_dim = out_dim
        self.blocks = nn.ParameterList(nn.Parameter(torch.empty(params // blocks)) for _ in range(blocks))


def recipe_model(recipe: str, action_dim: int, num_classes: int, channels: int = 3):
    from trainer.config import DEFAULT_CONFIG_PATH, load_config
    from trainer.methods.build import build_model

    config = load_config(DEFAULT_CONFIG_PATH.parent / f"{recipe}.yaml")
    return build_model(config, action_dim, channels), config, num_classes


def published_model(params: int, out_dim: int, blocks: int, recipe: str, action_dim: int, num_classes: int):
    """seq-JEPA with the recipe's head sizes around an encoder of a published size, on the meta device."""
    from trainer.config import DEFAULT_CONFIG_PATH, load_config
    from trainer.methods.seq_jepa import SeqJEPA

    config = load_config(DEFAULT_CONFIG_PATH.parent / f"{recipe}.yaml")
    with torch.device("meta"):
        return SeqJEPA(PublishedEncoder(params, out_dim, blocks), action_dim, config.method,
                       config.model.action_proj_dim), None, num_classes


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def fsdp2_units(model) -> list[int]:
    """Exclusive parameter counts of the units trainer/training/parallel.py shards, in its order: encoder blocks, the
    encoder, the same for the target, aggregator layers, the root."""
    from trainer.model import encoder_blocks

    def blocks(encoder):
        return list(encoder.blocks) if isinstance(encoder, PublishedEncoder) else encoder_blocks(encoder)

    units, seen = [], set()

    def unit(module_or_params):
        params = [p for p in (module_or_params.parameters() if isinstance(module_or_params, nn.Module)
                              else module_or_params) if id(p) not in seen]
        seen.update(id(p) for p in params)
        units.append(sum(p.numel() for p in params))

    for encoder in (model.encoder, model.target_encoder):
        if encoder is not None:
            for block in blocks(encoder):
                unit([block] if isinstance(block, nn.Parameter) else block)
            unit(encoder)
    for layer in model.aggregator.layers:
        unit(layer)
    unit(model)
    return units


def state_bytes(model, probes: int, gpus: int, strategy: str) -> float:
    """Weights + gradients + AdamW (2 states) of the online model, the EMA target and the probes, per GPU."""
    target = count(model.target_encoder)
    online = count(model) - target
    replicated = FP32 * probes * 4  # DDP: weights, gradients, 2 AdamW states
    if gpus == 1:  # one worker: no wrapper at all (trainer/training/parallel.py)
        return FP32 * (online * 4 + target) + replicated
    if strategy == "ddp":  # + the gradient buckets (gradient_as_bucket_view is off by default)
        return FP32 * (online * 5 + target) + replicated
    # FSDP2: everything sharded over the GPUs, plus at the peak two all-gathered units and one unreduced gradient.
    return FP32 * ((online * 4 + target) / gpus + 3 * max(fsdp2_units(model))) + replicated


def saved_bytes(model, seq_len: int, image_size: int, action_dim: int, bf16: bool, batch: int) -> int:
    """Bytes autograd saves for backward in one forward pass of `batch` sequences (parameters excluded)."""
    storages, params = {}, {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    views = torch.rand(batch, seq_len + 1, 3, image_size, image_size)
    actions = torch.rand(batch, seq_len, action_dim)
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(views, actions)
    return sum(storages.values())


def activation_bytes(model, seq_len: int, image_size: int, action_dim: int, bf16: bool) -> float:
    """Per sequence: the growth from 2 to 4 sequences, so per-step constants (bf16 weight copies) drop out."""
    return (saved_bytes(model, seq_len, image_size, action_dim, bf16, 4)
            - saved_bytes(model, seq_len, image_size, action_dim, bf16, 2)) / 2


CASES = [  # name, how to build it, action dim, classes, image side (None: not measured)
    ("convnet (embedded default, CPU)", lambda: recipe_model("default", 7, 10), 7, 10, 32),
    ("ResNet-18, CIFAR stem (cifar100 recipe)", lambda: recipe_model("cifar100", 9, 100), 9, 100, 32),
    ("ResNet-18, CIFAR stem (tinyimagenet recipe)", lambda: recipe_model("tinyimagenet", 9, 200), 9, 200, 64),
    ("ResNet-18, CIFAR stem (stl10_pls recipe)", lambda: recipe_model("stl10_pls", 2, 10), 2, 10, 32),
    ("ResNet-18 (3diebench recipe, 128 px)", lambda: recipe_model("3diebench", 4, 55), 4, 55, 128),
    ("ResNet-50 encoder (published: 23.5M, D=2048)",
     lambda: published_model(23_508_032, 2048, 16, "3diebench", 4, 55), 4, 55, None),
    ("ViT-B/16 encoder (published: 85.8M, D=768)",
     lambda: published_model(85_798_656, 768, 12, "3diebench", 4, 55), 4, 55, None),
    ("ViT-L/16 encoder (published: 303.3M, D=1024)",
     lambda: published_model(303_301_632, 1024, 24, "3diebench", 4, 55), 4, 55, None),
]


def probe_params(model, action_dim: int, classes: int, hidden: int) -> int:
    from trainer.training.probes import OnlineProbes

    with torch.device("meta"):
        return count(OnlineProbes(model.feature_dim, model.token_dim, action_dim, classes, hidden))


def tables(gpus: list[int]) -> str:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    head = "| model | params: online / EMA target / probes | strategy | " + " | ".join(f"{n} GPU" for n in gpus) + " |"
    state = [head, "|" + "---|" * (3 + len(gpus))]
    acts = [f"| model | views | per sequence, fp32 / bf16 autocast | per GPU at the recipe's batch on {gpus[0]} / "
            f"{gpus[-1]} GPUs, bf16 |", "|---|---|---|---|"]
    for name, build, action_dim, classes, image in CASES:
        model, config, _ = build()
        probes = probe_params(model, action_dim, classes, config.probe.hidden if config else 1024)
        target = count(model.target_encoder)
        params = f"{(count(model) - target) / 1e6:.1f}M / {target / 1e6:.1f}M / {probes / 1e6:.1f}M"
        for strategy in ("ddp", "fsdp2"):
            cells = [f"{state_bytes(model, probes, n, strategy) / GiB:.2f} GiB" for n in gpus]
            state.append(f"| {name} | {params} | {strategy.upper()} | " + " | ".join(cells) + " |")
        if image is not None:
            m, batch = config.model.seq_len, config.data.batch_size
            fp32, bf16 = (activation_bytes(model, m, image, action_dim, b) for b in (False, True))
            per_gpu = " / ".join(f"{bf16 * batch / n / GiB:.2f} GiB" for n in (gpus[0], gpus[-1]))
            acts.append(f"| {name} | M={m}+1, {image} px | {fp32 / 2**20:.1f} / {bf16 / 2**20:.1f} MiB | "
                        f"{per_gpu} (batch {batch}) |")
    return ("Training state per GPU (weights, gradients, AdamW, EMA target, probes), an ESTIMATE:\n\n"
            + "\n".join(state) + "\n\nActivations saved for backward (measured on the CPU: an ESTIMATE for a GPU, "
            "without cuDNN workspaces and allocator slack):\n\n" + "\n".join(acts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8], help="GPU counts to tabulate")
    print(tables(parser.parse_args(argv).gpus))
    return 0


if __name__ == "__main__":
    sys.exit(main())
