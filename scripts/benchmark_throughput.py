"""Training throughput of the default config, and the model step at the paper's CIFAR setting.

    python scripts/benchmark_throughput.py            # all three parts, prints a table (~3 min)
    python scripts/benchmark_throughput.py --only model

1. `model`: the trainer's seq-JEPA step (ResNet-18 CIFAR stem, 32 px, M=3, batch 32, one process, 2 threads),
   fp32 and bf16 autocast, each with and without `train.channels_last`, on synthetic tensors: pure
   compute, comparable to the authors' 15 seq/s (26 with bf16) measured on a 2-core AVX512-BF16 machine.
   On a CPU without native bf16, bf16 is emulated and measured over 2 steps only. Beside sequences/s: the
   step's achieved TFLOP/s (its FLOPs counted once by `trainer.training.flops.step_flops`) and the MFU against
   this CPU's peak (the best matmul/convolution rate, `peak_flops`), measured in the same precision and threads
   right before each row; the peaks and the CPU's flags are printed. Then, per precision, the same step
   compiled (`train.compile`, trainer/training/compile.py) beside eager, their timed steps interleaved (a
   drifting load weighs on both alike): the compiled warm-up steps (the first compiles every block) apart from
   the steady rate, and the ratio compiled/eager on the wall clock and per CPU-second.
2. `loop`: one process, no Ray: the default config's loader + train_step (sequences/s, data-wait share).
3. `ray`: the same config under Ray Train with 1 and with 2 workers (the figures the run logs to MLflow).
Every setting gets the whole machine. All figures in one run are measured back to back on the same
machine, so compare them as ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from trainer.config import load_config
from trainer.training.flops import describe_cpu
from trainer.training.precision import cpu_has_native_bf16, resolve_precision

CPUS = os.cpu_count() or 1  # every setting gets the whole machine, split evenly between its workers


def bench_plain_loop(overrides: list[str], steps: int, warmup: int = 5) -> dict:
    """Default config, 1 worker, no Ray: what one training process sustains (the trainer's own step)."""
    from trainer.data import build_loader, normalisation, to_device
    from trainer.launch import ensure_dataset, resolve_paths
    from trainer.training.setup import train_state_for
    from trainer.training.step import train_step

    config = resolve_paths(load_config(None, overrides + ["scaling.num_workers=1", f"scaling.cpus_per_worker={CPUS}"]))
    ensure_dataset(config)
    torch.set_num_threads(config.scaling.torch_threads or int(config.scaling.cpus_per_worker))
    device = torch.device("cpu")
    loader = build_loader(config, "train", 0, 1)
    state, normalise = train_state_for(config, loader, device), normalisation(loader, device)
    bf16 = resolve_precision(config.train.precision, device)[0] == "bf16"
    loader.set_epoch(0)
    batches = iter(loader)
    wait = compute = 0.0
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        train_step(state, to_device(batch, device, *normalise), 1e-4, 0.996, None, bf16)
        t2 = time.perf_counter()
        if i >= warmup:
            wait, compute = wait + t1 - t0, compute + t2 - t1
    total = wait + compute
    return {"seq_per_s": steps * config.data.batch_size / total, "data_wait_frac": wait / total}


def bench_ray(overrides: list[str], workers: int, steps: int) -> dict:
    """The run's own figures: the last logging window of a short Ray Train run."""
    from mlflow.tracking import MlflowClient

    from trainer.run import main

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        name = f"bench-{workers}w"
        code = main(overrides + [f"scaling.num_workers={workers}", f"scaling.cpus_per_worker={CPUS / workers:g}",
                                 "train.epochs=1", f"train.steps_per_epoch={steps}",
                                 f"train.log_every_steps={steps // 2}", "probe.val_batches=1",
                                 "tracking.log_model=false", f"run.storage_path={tmp}/runs", f"run.name={name}",
                                 f"tracking.tracking_uri={uri}"])
        assert code == 0, "benchmark run failed"
        client = MlflowClient(uri)
        run = client.search_runs([client.get_experiment_by_name("seq-jepa").experiment_id])[0]
        last = lambda key: client.get_metric_history(run.info.run_id, key)[-1].value  # noqa: E731
        return {"seq_per_s": last("train/samples_per_s"), "data_wait_frac": last("train/data_wait_frac")}


def model_step_config(channels_last: bool = False, compile: bool = False):
    """The paper's CIFAR setting: the schema's defaults (ResNet-18, 3 layers, 4 heads, ...) with the CIFAR stem."""
    from trainer.config import Config

    config = Config()
    config.model.cifar_stem, config.train.channels_last, config.train.compile = True, channels_last, compile
    return config


def model_step_state(channels_last: bool = False, compile: bool = False, batch: int = 32, seq_len: int = 3):
    """(the trainer's state, a synthetic batch) at the paper's CIFAR setting, 2 threads."""
    from trainer.training.setup import build_train_state
    from trainer.training.step import synthetic_batch

    torch.set_num_threads(2)
    device = torch.device("cpu")
    state = build_train_state(model_step_config(channels_last, compile), device, action_dim=9, channels=3,
                              num_classes=100)
    return state, synthetic_batch(batch, seq_len + 1, 3, 32, 9, 100, device)


def timed_step(state, data: dict, precision: str) -> tuple[float, float]:
    """One trainer step (forward, backward, AdamW, EMA, probes): (wall seconds, CPU seconds of all threads)."""
    from trainer.training.step import train_step

    t0, c0 = time.perf_counter(), time.process_time()
    train_step(state, data, 1e-4, 0.996, None, bf16=precision == "bf16")
    return time.perf_counter() - t0, time.process_time() - c0


def bench_model_step(precision: str, channels_last: bool = False, steps: int = 10, warmup: int = 3,
                     batch: int = 32, seq_len: int = 3, cpu_seconds: list | None = None) -> float:
    """Median sequences/s of the trainer's full step at the paper's CIFAR setting, on a synthetic batch;
    `cpu_seconds` receives each timed step's CPU time (all threads)."""
    state, data = model_step_state(channels_last, batch=batch, seq_len=seq_len)
    times = []
    for i in range(warmup + steps):
        wall, cpu = timed_step(state, data, precision)
        if i >= warmup:
            times.append(wall)
            if cpu_seconds is not None:
                cpu_seconds.append(cpu)
    return batch / statistics.median(times)


def bench_compiled_vs_eager(precision: str, steps: int = 10, warmup: int = 3, batch: int = 32) -> dict:
    """The same step eager and compiled (`train.compile`), their timed steps interleaved (eager, compiled, eager,
    ...) so that a load drifting on a shared machine weighs on both alike. Per kind: median sequences/s and
    sequences per CPU-second; for the compiled one also its warm-up steps' wall seconds (the first compiles)."""
    states = {kind: model_step_state(compile=kind == "compiled", batch=batch) for kind in ("eager", "compiled")}
    result = {kind: {"wall": [], "cpu": [], "warmup_s": []} for kind in states}
    for kind, (state, data) in states.items():
        result[kind]["warmup_s"] = [timed_step(state, data, precision)[0] for _ in range(warmup)]
    for _ in range(steps):
        for kind, (state, data) in states.items():
            wall, cpu = timed_step(state, data, precision)
            result[kind]["wall"].append(wall)
            result[kind]["cpu"].append(cpu)
    for times in result.values():
        times["seq_per_s"] = batch / statistics.median(times["wall"])
        times["seq_per_cpu_s"] = batch / statistics.median(times["cpu"])
    return result


def model_step_flops() -> float:
    """The step's FLOPs per sequence at the CIFAR setting (the trainer's counter)."""
    from trainer.training.flops import step_flops

    return step_flops(model_step_config(), 9, 3, 100, batch_per_rank=1, image_side=32, num_views=4)


def cpu_peaks(precision: str) -> tuple[float, float]:
    """This CPU's measured peak in `precision` with 2 threads (as the step), per wall second and per CPU-second,
    measured right before the row it rates: on a shared machine the load drifts within a run."""
    from trainer.training.flops import measure_peak

    torch.set_num_threads(2)
    bf16 = precision == "bf16"
    return (measure_peak(torch.device("cpu"), bf16),
            measure_peak(torch.device("cpu"), bf16, clock=time.process_time))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["loop", "ray", "model"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("overrides", nargs="*", help="config overrides for the loop/ray parts")
    args = parser.parse_args()
    rows, notes, compile_lines = [], [], []
    if args.only in (None, "model"):  # first, before Ray's daemons share the CPU
        per_sequence = model_step_flops()
        notes.append(f"step FLOPs (flop counter: fwd+bwd, EMA target fwd, probes): {per_sequence / 1e9:.2f} GFLOP "
                     "per sequence; MFU against the CPU peak (best matmul/conv rate) measured just before each row, "
                     "on the wall clock and per CPU-second (CPU time: what other jobs on the machine inflate least)")
        for precision in ("fp32", "bf16"):
            emulated = precision == "bf16" and not cpu_has_native_bf16()
            for channels_last in (False, True):
                peak, cpu_peak = cpu_peaks(precision)
                cpu_seconds = []
                # Emulated bf16 is ~20x slower: a few steps are enough to show it.
                rate = bench_model_step(precision, channels_last, cpu_seconds=cpu_seconds,
                                        **({"steps": 2, "warmup": 1} if emulated else {}))
                per_cpu_second = 32 * per_sequence / statistics.median(cpu_seconds)
                rows.append((f"model step, ResNet-18 CIFAR stem 32px M=3 b32, {precision}"
                             f"{', channels_last' if channels_last else ''}{' (emulated)' if emulated else ''}",
                             rate, None, (rate * per_sequence / 1e12, rate * per_sequence / peak, peak,
                                          per_cpu_second / cpu_peak)))
            if emulated:
                continue
            # Compiled beside eager in the plain layout (inductor picks the convolutions' layouts itself).
            peak, cpu_peak = cpu_peaks(precision)
            r = bench_compiled_vs_eager(precision)
            for kind in ("eager", "compiled"):
                rate = r[kind]["seq_per_s"]
                rows.append((f"model step, ResNet-18 CIFAR stem 32px M=3 b32, {precision}, {kind}, interleaved",
                             rate, None, (rate * per_sequence / 1e12, rate * per_sequence / peak, peak,
                                          r[kind]["seq_per_cpu_s"] * per_sequence / cpu_peak)))
            eager, compiled = r["eager"], r["compiled"]
            ratio, cpu_ratio = (compiled[key] / eager[key] for key in ("seq_per_s", "seq_per_cpu_s"))
            compile_lines.append(
                f"{precision}: compiled/eager {ratio:.2f} on the wall clock, {cpu_ratio:.2f} per CPU-second "
                f"({compiled['seq_per_cpu_s']:.1f} / {eager['seq_per_cpu_s']:.1f} sequences); warm-up steps "
                f"compiled {', '.join(f'{t:.1f}' for t in compiled['warmup_s'])} s (the first compiles), eager "
                f"{', '.join(f'{t:.1f}' for t in eager['warmup_s'])} s")
    if args.only in (None, "loop"):
        r = bench_plain_loop(args.overrides, args.steps)
        rows.append(("default config, 1 worker, plain loop", r["seq_per_s"], r["data_wait_frac"], None))
    if args.only in (None, "ray"):
        for workers in (1, 2):
            r = bench_ray(args.overrides, workers, args.steps)
            rows.append((f"default config, Ray Train, {workers} worker(s)", r["seq_per_s"], r["data_wait_frac"],
                         None))
    print(f"\n{describe_cpu()}; native bf16: {'yes' if cpu_has_native_bf16() else 'no'}")
    for line in notes:
        print(line)
    print(f"{'setting':<76} {'seq/s':>8} {'data wait':>10} {'TFLOP/s':>8} {'MFU':>6} {'peak':>6} {'MFU/CPU-s':>9}")
    for name, rate, wait, mfu in rows:
        flops = "" if mfu is None else (f"{mfu[0]:>8.3f} {100 * mfu[1]:>5.1f}% {mfu[2] / 1e12:>6.3f} "
                                        f"{100 * mfu[3]:>8.1f}%")
        print(f"{name:<76} {rate:>8.1f} {'' if wait is None else f'{100 * wait:9.1f}%':>10} {flops}")
    for line in compile_lines:
        print(line)
    if any(mfu is not None and mfu[1] > 1 for *_, mfu in rows):
        print("MFU above 100 %: the measured peak is the best of one matmul and one convolution, a lower bound of what "
              "this CPU's libraries reach on other shapes")


if __name__ == "__main__":
    main()
