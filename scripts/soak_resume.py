"""Soak test: kill training workers again and again; the run must end exactly as an uninterrupted one.

    python scripts/soak_resume.py --cycles 5            # about 4 minutes on 2 CPU cores

Starts a local Ray instance, trains the reference run (no faults), then the same config again while
killing a random Ray Train worker process (SIGKILL, by pid) at `--cycles` points spread over the run;
Ray Train restores the group from the latest checkpoint each time (`run.max_failures`). Compares the
two runs from what each step trained on (`debug.sample_log`) and from their final checkpoints, and prints

    lost samples: 0, duplicated samples: 0, final weights equal: yes
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=3, help="worker kills (each followed by a restore)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=30)
    parser.add_argument("--checkpoint-every-steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="when and whom to kill")
    parser.add_argument("--workdir", help="default: a new temporary folder")
    return parser.parse_args()


def overrides(args, work: Path, shards: Path, name: str) -> list[str]:
    return [f"data.shards={shards}", "data.prepare=false", "data.batch_size=32", "data.val_batch_size=64",
            "data.loader_workers=2", "data.shuffle_buffer=100", "model.encoder=convnet", "model.conv_width=8",
            "model.seq_len=2", "model.action_proj_dim=16", "seq_jepa.num_layers=1", "seq_jepa.pred_hidden=64",
            "probe.hidden=32", "probe.val_batches=2", f"train.epochs={args.epochs}",
            f"train.steps_per_epoch={args.steps_per_epoch}", "train.log_every_steps=1",
            f"train.checkpoint_every_steps={args.checkpoint_every_steps}",
            f"debug.sample_log={work / 'samples' / name}",
            f"run.storage_path={work / 'runs'}", f"run.name={name}", f"run.max_failures={args.cycles + 2}",
            f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}", "tracking.log_model=false"]


def start_training(args, work, shards, name, env) -> subprocess.Popen:
    log = open(work / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "trainer/run.py", *overrides(args, work, shards, name)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def trained_steps(work: Path, name: str) -> int:
    from trainer.training.sample_log import read_sample_log

    folder = work / "samples" / name
    return max((step for _, step in read_sample_log(folder)), default=0) if folder.exists() else 0


def kill_a_worker(rng: random.Random) -> int | None:
    from ray.util.state import list_actors

    alive = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    pids = sorted(a.pid for a in alive if a.pid)
    if not pids:
        return None
    pid = rng.choice(pids)
    os.kill(pid, signal.SIGKILL)
    return pid


def samples_per_epoch(work: Path, name: str) -> dict[int, collections.Counter]:
    from trainer.training.sample_log import read_sample_log

    counts: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for epoch, keys in read_sample_log(work / "samples" / name).values():
        counts[epoch].update(keys)
    return counts


def final_state(work: Path, name: str) -> dict:
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from trainer.checkpointing.run_folders import checkpoints_of_run

    out = work / f"{name}.pt"
    dcp_to_torch_save(checkpoints_of_run(work / "runs" / name)[-1], out)
    return torch.load(out, weights_only=False)  # our own file, written just now


def same_state(a, b) -> bool:
    import torch

    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def main() -> int:
    args = parse_args()
    import ray

    from data_pipeline import prepare_fashion_mnist_shards

    work = Path(args.workdir or tempfile.mkdtemp(prefix="seqjepa-soak-")).resolve()
    shards = work / "shards"
    if not (shards / "train" / "manifest.json").exists():
        prepare_fashion_mnist_shards(shards, None, str(Path("~/seq-jepa/data/cache").expanduser()),
                                     samples_per_shard=400, limit=1600, system_packages=True)
    ray.init(num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    total = args.epochs * args.steps_per_epoch
    print(f"[soak] work folder {work}; {total} steps per run", flush=True)

    reference = start_training(args, work, shards, "reference", env)
    if reference.wait() != 0:
        print(f"[soak] the reference run failed; see {work / 'reference.log'}")
        return 1

    rng = random.Random(args.seed)
    soak = start_training(args, work, shards, "soak", env)
    kills = []
    for cycle in range(args.cycles):
        target = round(total * (cycle + 1) / (args.cycles + 1)) + rng.randint(-2, 2)
        while soak.poll() is None and trained_steps(work, "soak") < target:
            time.sleep(0.2)
        if soak.poll() is not None:
            break
        pid = kill_a_worker(rng)
        kills.append((trained_steps(work, "soak"), pid))
        print(f"[soak] cycle {cycle + 1}: killed worker pid {pid} after step {kills[-1][0]}", flush=True)
        time.sleep(3)  # let Ray Train notice and start restoring before the next target is checked
    code = soak.wait()
    if code != 0:
        print(f"[soak] the soak run failed (exit {code}); see {work / 'soak.log'}")
        return 1

    ref, got = samples_per_epoch(work, "reference"), samples_per_epoch(work, "soak")
    lost = sum(max(0, n - got.get(e, collections.Counter())[k]) for e in ref for k, n in ref[e].items())
    duplicated = sum(max(0, n - ref.get(e, collections.Counter())[k]) for e in got for k, n in got[e].items())
    equal = same_state(final_state(work, "reference"), final_state(work, "soak"))
    restores = sorted({int(line.split(", step ")[1].split(",")[0]) for line in open(work / "soak.log")
                       if "[seq-jepa] resumed from" in line})
    print(f"[soak] {len(kills)} kills; the group was restored from the checkpoints of steps {restores}")
    print(f"lost samples: {lost}, duplicated samples: {duplicated}, final weights equal: {'yes' if equal else 'no'}")
    ray.shutdown()
    return 0 if lost == duplicated == 0 and equal else 1


if __name__ == "__main__":
    sys.exit(main())
