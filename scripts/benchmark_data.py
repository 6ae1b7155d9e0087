"""Sequences per second the data pipeline delivers, against a naive per-file loader and the trainer's appetite.

    python -m scripts.benchmark_data                     # every part (~12 min on 2 cores)
    python -m scripts.benchmark_data --only loader       # the shard loader: local and S3, 0/1/2 loader workers
    python -m scripts.benchmark_data --only datasets     # one loader process per paper dataset's composition
    python -m scripts.benchmark_data --only extraction   # offline feature extraction against the training loader
    python -m scripts.benchmark_data --objects 100       # a smaller 3DIEBench-like set

`loader`: two shard sets, M = 3 (4 views per sequence):
* `fashion-mnist`: the embedded default (28 px sources rendered to 32 px views);
* `3diebench-like`: a synthetic object set in SIE's on-disk layout (50 views per object, 256 px JPEG
  renders with smooth content and random latents), written to shards at 128 px by the real source.
Each is read from local disk and from SeaweedFS's S3 gateway on 127.0.0.1 (real HTTP, boto3), with 0, 1
and 2 DataLoader workers, batch 64, one process. The naive loader does what the official code does
per sequence: open each of the M+1 drawn views' JPEG file, decode it, resize it to 128 px, convert
and normalise it, load its latent .npy, one after the other. The trainer's appetite is one training
worker's full step (ResNet-18, standard stem, 128 px, M = 3, batch 32, 2 threads, the paper's
3DIEBench setting) on this machine.
`datasets`: small synthetic sets in each paper dataset's real format (`synthetic_datasets.py`), written by
the real sources; the sequences per CPU-second ONE loader process (in-process, one thread) delivers with the
recipe's composition (CPU time: other jobs on a shared machine do not inflate it), the recipe step's FLOPs
per sequence (`trainer.training.flops`), and the loader processes an H100 would need at an assumed 40 % MFU
in bf16 (infra/README.md); in the two `data.render_on` modes, and rendering on the device with 4 and 8 sequences
drawn from each sample read (`data.draws_per_sample`).
`extraction`: `python -m trainer.evaluate`'s feature extraction (the embedded default on Fashion-MNIST, and
the 3DIEBench recipe on a 3DIEBench-like set): its loader alone and `extract_features` end to end (`--device
cuda` on a GPU machine; on a CPU only the embedded default's), in-process (before) and with
`eval.loader_workers` (after), beside the training loader, and where an in-process sequence's time goes.
All figures come from one run: compare them as ratios. The CPU's flags are printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_pipeline import S3Options, build_sequence_loader, prepare_fashion_mnist_shards, upload_shard_set
from data_pipeline.prepare import write_dataset
from data_pipeline.sources.affine import AffineComposer
from data_pipeline.sources.threedie import ThreeDIEComposer
from data_pipeline.transforms import ActionSpace
from scripts import benchmark_data_parts as parts
from scripts import synthetic_datasets as synth
from tests.helpers.object_store import Key, SeaweedFS, create_bucket, unavailable_reason
from trainer.training.flops import describe_cpu

NUM_VIEWS, BATCH, SIDE = 4, 64, 128
VIEWS_PER_OBJECT = synth.VIEWS_PER_OBJECT
MEAN, STD = np.array([0.5016, 0.5037, 0.5060]), np.array([0.1030, 0.0999, 0.0969])


def naive_rate(root: Path, objects: int, sequences: int) -> float:
    """The official code's way: per sequence, M+1 view files opened, decoded and transformed one by one."""
    names = np.load(root / "train_images.npy")
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for s in range(sequences):
        folder = root / str(names[s % objects]).strip("/")
        views, latents = [], []
        for k in rng.choice(VIEWS_PER_OBJECT, NUM_VIEWS, replace=False):
            with Image.open(folder / f"image_{k}.jpg") as image:
                pixels = np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.BILINEAR), dtype=np.float32)
            views.append(torch.from_numpy(((pixels / 255.0 - MEAN) / STD).transpose(2, 0, 1).copy()))
            latents.append(np.load(folder / f"latent_{k}.npy"))
        torch.stack(views), torch.from_numpy(np.stack(latents))
    return sequences / (time.perf_counter() - start)


def loader_rate(location: str, composer, workers: int, batches: int, s3: S3Options | None) -> float:
    loader = build_sequence_loader(location, composer=composer, num_views=NUM_VIEWS, batch_size=BATCH, rank=0,
                                   world_size=1, num_workers=workers, seed=0, train=True, shuffle_buffer=256, s3=s3)
    return parts.loader_rate(loader, batches * BATCH)


def training_appetite(steps: int = 6) -> float:
    """Sequences/s one training worker consumes at the 3DIEBench setting (the trainer's full step, fp32)."""
    from trainer.config import Config
    from trainer.training.setup import build_train_state
    from trainer.training.step import synthetic_batch, train_step

    torch.set_num_threads(2)
    device = torch.device("cpu")
    state = build_train_state(Config(), device, action_dim=4, channels=3, num_classes=55)
    data = synthetic_batch(32, 4, 3, SIDE, 4, 55, device)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        train_step(state, data, 1e-4, 0.996, None, bf16=False)
        times.append(time.perf_counter() - t0)
    return 32 / statistics.median(times[2:])


def start_s3(folder: Path) -> SeaweedFS:
    """SeaweedFS's S3 gateway on 127.0.0.1, as the tests start it (tests/helpers/object_store.py), with a throwaway
    key."""
    reason = unavailable_reason()
    if reason is not None:
        raise SystemExit(f"benchmark_data: the S3 part needs SeaweedFS: {reason}")
    key = Key("bench", "bench-secret")
    os.environ.update({**key.env(), "AWS_DEFAULT_REGION": "us-east-1"})
    return SeaweedFS(folder, key).start()


def loader_part(tmp: Path, objects: int, batches: int) -> list[tuple[str, float]]:
    """The shard loader on both sets, local and S3, against the naive loader and one training worker's appetite."""
    rows = []
    t0 = time.perf_counter()
    synth.write_3diebench(tmp / "raw", objects)
    write_dataset("3diebench", tmp / "raw", str(tmp / "shards"), splits=("train",), samples_per_shard=25,
                  progress=False, image_size=SIDE)
    fashion = prepare_fashion_mnist_shards(tmp / "fm", None, "~/seq-jepa/data/cache", 2000, limit=8000,
                                           progress=False, system_packages=True)["train"]
    print(f"data sets ready in {time.perf_counter() - t0:.0f} s")
    server = start_s3(tmp / "seaweedfs")
    try:
        s3 = S3Options(endpoint_url=server.url)
        bucket = create_bucket(server.url, "bench")
        sets = {"fashion-mnist": (fashion, lambda m: AffineComposer.for_shards(ActionSpace(), 32, m)),
                "3diebench-like": (str(tmp / "shards" / "train"), ThreeDIEComposer())}
        for name, (local, composer) in sets.items():
            remote = f"s3://{bucket}/{name}"
            upload_shard_set(local, remote, s3, progress=False)
            for where, location, options in (("local", local, None), ("S3", remote, s3)):
                for workers in (0, 1, 2):
                    rate = loader_rate(location, composer, workers, batches, options)
                    rows.append((f"{name}, shard loader, {where}, {workers} loader worker(s)", rate))
                    print(f"  {rows[-1][0]}: {rate:.0f} seq/s", flush=True)
    finally:
        server.stop()
    naive = naive_rate(tmp / "raw", objects, 300)
    rows.append(("3diebench-like, naive per-file loader (the official code's way), 0 workers", naive))
    appetite = training_appetite()
    rows.append(("one training worker consumes (ResNet-18 128 px M=3 b32, fp32, 2 threads)", appetite))
    shard0 = next(r for n, r in rows if n.startswith("3diebench-like, shard loader, local, 0"))
    print_rows(rows)
    print(f"\nshard loader / naive loader (3diebench-like, local, one process): {shard0 / naive:.1f}x")
    print(f"one loader process / one training worker's consumption: {shard0 / appetite:.1f}x")
    return rows


def print_rows(rows: list[tuple[str, float]]) -> None:
    print(f"\n{'setting':<86} {'seq/s':>8}")
    for name, rate in rows:
        print(f"{name:<86} {rate:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["loader", "datasets", "extraction"])
    parser.add_argument("--objects", type=int, default=300, help="objects of the 3DIEBench-like sets")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per setting")
    parser.add_argument("--device", default="cpu", help="where `extraction` runs the model end to end (cuda: "
                        "scripts/gpu_check.sh)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.objects < 2 * BATCH:
        parser.error(f"--objects must be >= {2 * BATCH}: each of 2 loader workers needs a full batch of its own")
    print(describe_cpu(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "loader"):
            loader_part(tmp / "loader", args.objects, args.batches)
        if args.only in (None, "datasets"):
            rows = parts.dataset_rates(tmp / "datasets", args.objects, args.batches * BATCH)
            print(f"\n{'paper dataset (training composition)':<40} {'render_on, draws':>17} "
                  f"{'seq/CPU-s per process':>22} {'GFLOP/seq':>10} "
                  f"{f'processes per H100 at {parts.ASSUMED_MFU:.0%} MFU bf16':>38}")
            for name, mode, rate, gflops, processes, _ in rows:
                print(f"{name:<40} {mode:>17} {rate:>22.0f} {gflops:>10.2f} {processes:>38.1f}")
            print("\none loader process, CPU ms per sequence of each stage (render_on=device: read, decode, plan):")
            for name, mode, *_, stages in rows:
                if mode == parts.MODES[0][0]:
                    print(f"  {name}: " + ", ".join(f"{stage} {ms:.3f}" for stage, ms in stages.items()))
        if args.only in (None, "extraction"):
            rows, stages = [], {}
            for name, (config_file, split, overrides) in parts.extraction_sets(tmp / "extraction",
                                                                                args.objects).items():
                fashion = name.startswith("fashion")  # the 3DIEBench recipe's ResNet-18 is too slow on a CPU
                end_to_end = device if fashion or device.type == "cuda" else None
                rows += parts.extraction_rates(name, config_file, split, overrides, 4096 if fashion else 256,
                                               end_to_end)
                stages[name] = parts.extraction_breakdown(config_file, split, overrides, 2048 if fashion else 64)
            print_rows(rows)
            print("\nin-process extraction, CPU ms per sequence (the model's summed over its threads):")
            for name, times in stages.items():
                print(f"  {name}: " + ", ".join(f"{stage} {ms:.3f}" for stage, ms in times.items()))
    print(describe_cpu())


if __name__ == "__main__":
    main()
