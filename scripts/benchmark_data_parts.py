"""The `datasets` and `extraction` parts of scripts/benchmark_data.py (what each measures: its docstring).

Why these two: sizing a GPU node needs the sequences/s ONE loader process delivers for each paper dataset's
training composition (set against the step's FLOPs, infra/README.md), and the offline evaluation must not be
slower than training's loader (it composes more views per sequence, and used to render them in-process).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import torch

from data_pipeline import build_sequence_loader, prepare_fashion_mnist_shards, render_planned
from data_pipeline.prepare import write_dataset
from data_pipeline.storage import store_for
from data_pipeline.stream import SkipCounter, read_raw_samples
from scripts import synthetic_datasets as synth
from trainer.config import load_config
from trainer.data import build_frozen_view_loader, composer_options, eval_loader_workers, gpu_loader_workers
from trainer.evaluation.features import extract_features
from trainer.methods.build import build_model
from trainer.training.flops import gpu_peak, step_flops
from trainer.training.precision import resolve_precision

CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"
ASSUMED_MFU = 0.40  # of an H100 SXM's dense bf16 peak: what a well-fed ResNet-18 step might reach (an assumption)


def loader_rate(loader, sequences: int, clock=time.perf_counter, steady: bool = True) -> float:
    """Sequences per second of `clock` over whole passes (train loaders cycle epochs). `steady`: each pass's first
    batch is left out, since starting worker processes is per pass, seconds that a real epoch of thousands of
    batches amortises while these sets are small (an in-process loader has none: its first batch, filling the
    shuffle buffer, is work every sample costs). `clock=time.process_time`: per second of this process's CPU
    time, which other jobs on a shared machine do not inflate (an in-process one-thread loader: per busy core)."""
    seen, elapsed, epoch = 0, 0.0, 0
    while seen < sequences:
        loader.set_epoch(epoch)
        start = None if steady else clock()
        for batch in loader:
            if start is None:
                start = clock()
                continue
            seen += len(batch["label"])
            if seen >= sequences:
                break
        if start is not None:
            elapsed += clock() - start
        epoch += 1
    return seen / elapsed


def write_paper_sets(tmp: Path, objects: int) -> dict[str, tuple[str, str, int]]:
    """{name: (shard set, recipe, views per training sequence)}, each written in its real format by its source."""
    raw, out = tmp / "raw", tmp / "shards"
    write_dataset("3diebench", synth.write_3diebench(raw / "3die", objects), str(out / "3die"), splits=("train",),
                  samples_per_shard=25, progress=False, image_size=128)
    write_dataset("cifar100", synth.write_cifar100(raw / "cifar", 2048), str(out / "cifar"), splits=("train",),
                  samples_per_shard=512, progress=False)
    write_dataset("tinyimagenet", synth.write_tinyimagenet(raw / "tiny", 2048), str(out / "tiny"),
                  splits=("train",), samples_per_shard=512, progress=False)
    stl10, saliency = synth.write_stl10(raw / "stl10", 1024)
    write_dataset("stl10", stl10, str(out / "stl10"), splits=("unlabeled",), samples_per_shard=256, progress=False,
                  saliency_root=str(saliency))
    return {"3DIEBench 128 px, M=3": (str(out / "3die" / "train"), "3diebench", 4),
            "CIFAR-100 32 px, M=3": (str(out / "cifar" / "train"), "cifar100", 4),
            "Tiny-ImageNet 64 px, M=3": (str(out / "tiny" / "train"), "tinyimagenet", 4),
            "STL-10 PLS 32 px foveae, 5 saccades": (str(out / "stl10" / "unlabeled"), "stl10_pls", 5)}


# (data.render_on, data.draws_per_sample): where the views are rendered, and the sequences drawn from each sample
# read (an epoch then has that many times the sequences: README "Data")
MODES = (("loader", 1), ("device", 1), ("device", 4), ("device", 8))


def dataset_rates(tmp: Path, objects: int, sequences: int) -> list[tuple[str, str, float, float, float, dict]]:
    """Per paper dataset and `MODES` entry: (name, mode, sequences per CPU-second of one loader process,
    GFLOP per sequence of the recipe's step, loader processes an H100 SXM needs at ASSUMED_MFU of its bf16 peak,
    CPU ms per sequence of each loader stage). In device mode a loader process reads, decodes and plans (every
    random draw); the rendering moves to the training process's device. CPU time, not wall time: on a machine
    shared with other jobs the wall clock says more about them."""
    peak = gpu_peak("NVIDIA H100 80GB HBM3", "bf16")[0]
    rows = []
    for name, (shards, recipe, views) in write_paper_sets(tmp, objects).items():
        config = load_config(CONFIGS / f"{recipe}.yaml")
        flops, stages = None, None
        for render_on, draws in MODES:
            loader = build_sequence_loader(shards, composer=composer_options(config), num_views=views, batch_size=64,
                                           rank=0, world_size=1, num_workers=0, seed=0, train=True,
                                           shuffle_buffer=256, render_in_loader=render_on == "loader",
                                           draws_per_sample=draws)
            mode = render_on if draws == 1 else f"{render_on}, {draws} draws"
            torch.set_num_threads(1)  # one loader process: one core
            rate = loader_rate(loader, sequences, clock=time.process_time, steady=False)
            if flops is None:  # the first mode renders in the loader: its batches have views
                loader.set_epoch(0)
                side = next(iter(loader))["views"].shape[-1]
                flops = step_flops(config, loader.action_dim, loader.channels, loader.num_classes, 1, side, views)
                stages = loader_stages(loader, views, 64, min(sequences, 1024))[0]
            rows.append((name, mode, rate, flops / 1e9, ASSUMED_MFU * peak / flops / rate, stages))
            print(f"  {name}, render_on={render_on}, draws_per_sample={draws}: {rate:.0f} seq/s per loader process, "
                  f"{flops / 1e9:.2f} GFLOP per sequence", flush=True)
    return rows


def fashion_shards(tmp: Path) -> Path:
    """The embedded default's shard root (train/ and val/, 8,000 samples each)."""
    return Path(prepare_fashion_mnist_shards(tmp / "fm", None, "~/seq-jepa/data/cache", 2000, limit=8000,
                                             progress=False, system_packages=True)["val"]).parent


def extraction_sets(tmp: Path, objects: int) -> dict[str, tuple[Path | None, str, list[str]]]:
    """{name: (config file or None, split, overrides)}: the embedded default on Fashion-MNIST (its eval section:
    M_val up to 6, 7 views per sequence) and the 3DIEBench recipe (M_val up to 8: 9 views) on a 3DIEBench-like
    set, whose few objects call for smaller batches."""
    fashion = fashion_shards(tmp)
    write_dataset("3diebench", synth.write_3diebench(tmp / "raw", objects, split="val"), str(tmp / "3die"),
                  splits=("val",),
                  samples_per_shard=25, progress=False, image_size=128)
    return {"fashion-mnist (embedded default)": (None, "val", [f"data.shards={fashion}", "data.prepare=false"]),
            "3diebench-like (3diebench recipe)": (CONFIGS / "3diebench.yaml", "val",
                                                  [f"data.shards={tmp / '3die'}", "data.prepare=false",
                                                   "data.val_batch_size=32", "data.shuffle_buffer=64"])}


def extraction_rates(name: str, config_file: Path | None, split: str, overrides: list[str], sequences: int,
                     device: torch.device | None) -> list[tuple[str, float]]:
    """The offline evaluation's frozen-view loader in-process and with loader workers (the GPU default: this
    machine's cores up to 4; `eval.loader_workers`' default on a CPU is in-process), beside the training loader's
    composition with as many workers (read from the same split, M+1 views); with a `device`, `extract_features`
    end to end with the recipe's model."""
    after = eval_loader_workers(load_config(config_file, overrides)) or gpu_loader_workers()
    rows = []

    def add(label: str, rate: float) -> None:
        rows.append((f"{name}: {label}", rate))
        print(f"  {rows[-1][0]}: {rate:.0f} seq/s", flush=True)

    for workers in (0, after):
        config = load_config(config_file, overrides)
        train = build_sequence_loader(f"{config.data.shards}/{split}", composer=composer_options(config),
                                      num_views=config.model.seq_len + 1, batch_size=config.data.val_batch_size,
                                      rank=0, world_size=1, num_workers=workers, seed=0, train=True,
                                      shuffle_buffer=config.data.shuffle_buffer)
        add(f"training loader, {config.model.seq_len + 1} views, {workers} workers", loader_rate(train, sequences))
    for workers in (0, after):
        config = load_config(config_file, overrides + [f"eval.loader_workers={workers}"])
        views = max(2, *config.eval.seq_lens) + 1
        label = "in-process" if workers == 0 else f"{workers} loader workers"
        add(f"frozen-view loader, {views} views, {label}",
            loader_rate(build_frozen_view_loader(config, split, views), sequences))
        if device is not None:
            add(f"extract_features end to end (its model, {device.type}), {label}",
                extraction_rate(config, split, views, min(sequences, 2048), device))  # model-bound on a CPU: slow
    return rows


def extraction_rate(config, split: str, num_views: int, sequences: int, device: torch.device) -> float:
    torch.manual_seed(0)
    loader = build_frozen_view_loader(config, split, num_views)
    model = build_model(config, loader.action_dim, loader.channels).to(device)
    bf16 = resolve_precision(config.train.precision, device)[0] == "bf16"
    start = time.perf_counter()
    extract_features(model, loader, config.eval.seq_lens, sequences, device, bf16, desc="extraction")
    return sequences / (time.perf_counter() - start)


def loader_stages(loader, num_views: int, batch_size: int, sequences: int) -> tuple[dict[str, float], list[dict]]:
    """CPU milliseconds per sequence of one loader process's stages, in-process and single-threaded as a worker:
    reading the tar, decoding the samples (3DIEBench keeps its JPEGs until a view is drawn), planning (every random
    draw, the actions; 3DIEBench: decoding the drawn JPEGs), rendering the views (what `data.render_on=device` moves
    to the device), and the size of what a loader ships per sequence in each mode; and the composed batches."""
    skips, store, clock = SkipCounter(), store_for(loader.shard_dir, None), time.process_time
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = clock()
    raw = list(itertools.islice((s for path in loader.paths for _, s in read_raw_samples(path, store, skips)),
                                sequences))
    t1 = clock()
    records = [loader.composer.decode(s) for s in raw]
    t2 = clock()
    generator = torch.Generator().manual_seed(0)
    plans = [loader.composer.plan(records[i:i + batch_size], num_views, generator)
             for i in range(0, len(records), batch_size)]
    t3 = clock()
    batches = [render_planned(loader.composer, plan, torch.device("cpu")) for plan in plans]
    t4 = clock()
    torch.set_num_threads(threads)
    ms = 1e3 / len(records)
    shipped = {mode: sum(nbytes(b) for b in group) / len(records) / 1e3
               for mode, group in (("loader", batches), ("device", plans))}
    return {"read": (t1 - t0) * ms, "decode": (t2 - t1) * ms, "plan": (t3 - t2) * ms,
            f"render {num_views} views": (t4 - t3) * ms, "KB shipped (loader mode)": shipped["loader"],
            "KB shipped (device mode)": shipped["device"]}, batches


def nbytes(value) -> int:
    """The bytes of the tensors and byte strings in a (nested) batch."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if dataclasses.is_dataclass(value):
        return sum(nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


def extraction_breakdown(config_file: Path | None, split: str, overrides: list[str], sequences: int
                         ) -> dict[str, float]:
    """CPU milliseconds per sequence of the in-process extraction's stages: the loader's (`loader_stages`) and the
    recipe's model (all of `extract_features`' forward passes, on this CPU, summed over its threads)."""
    config = load_config(config_file, overrides)
    num_views = max(2, *config.eval.seq_lens) + 1
    loader = build_frozen_view_loader(config, split, num_views)
    stages, batches = loader_stages(loader, num_views, config.data.val_batch_size, sequences)

    class Batches:  # the composed batches as a loader (extract_features reads mean/std from it)
        mean, std = loader.mean, loader.std

        def __iter__(self):
            return iter(batches)

    model = build_model(config, loader.action_dim, loader.channels)
    bf16 = resolve_precision(config.train.precision, torch.device("cpu"))[0] == "bf16"
    start = time.process_time()
    extract_features(model, Batches(), config.eval.seq_lens, None, torch.device("cpu"), bf16, desc="model")
    count = sum(len(b["label"]) for b in batches)
    return {**stages, f"model ({'bf16' if bf16 else 'fp32'}, {torch.get_num_threads()} threads)":
            (time.process_time() - start) * 1e3 / count}
