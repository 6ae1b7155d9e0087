"""The offline evaluation's loader: loader workers share the batches (not the shards), so the batches, their views and
their order are the same for any number of workers; workers may be spawned (safe in a process that started Ray)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest
import torch

from data_pipeline import DataError, build_sequence_loader
from data_pipeline.sources.affine import AffineComposer
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.runs import same_batch, tiny_overrides
from tests.helpers.shards import IDENTITY, SIDE, UNEVEN, epoch_ids, make_shards
from trainer.config import load_config
from trainer.data import build_frozen_view_loader, composer_options, eval_loader_workers, usable_cores
from trainer.errors import ConfigError

SPACE = AffineComposer.for_shards  # with random transformations: views differ if the seeds differ


def toy_loader(shards, *, num_workers, worker_split="batches", context=None, train=False, space=None, batch_size=4):
    from data_pipeline import ActionSpace

    return build_sequence_loader(str(shards), composer=functools.partial(SPACE, space or ActionSpace(), SIDE + 4),
                                 num_views=3, batch_size=batch_size, rank=0, world_size=1, num_workers=num_workers,
                                 seed=0, train=train, shuffle_buffer=8, worker_split=worker_split,
                                 multiprocessing_context=context)


def batches(loader) -> list[dict]:
    loader.set_epoch(0)
    return list(loader)


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert same_batch(x, y)


def test_the_frozen_loaders_batches_are_the_same_for_any_number_of_workers(fashion_mnist_shards, tmp_path):
    """Real Fashion-MNIST shards of 400 samples, batches of 64: batches span shard boundaries."""
    base = tiny_overrides(fashion_mnist_shards, tmp_path / "runs", "sqlite://", "frozen")
    loaders = {w: build_frozen_view_loader(load_config(None, base + [f"eval.loader_workers={w}"]), "val", 4)
               for w in (0, 1, 3)}
    assert loaders[3].num_workers == 3 and loaders[3].multiprocessing_context == "forkserver"
    reference = batches(loaders[0])
    assert len(reference) == len(loaders[0]) == len(loaders[3]) == -(-1600 // 64)
    for workers in (1, 3):
        assert_same_batches(batches(loaders[workers]), reference)
    # ... and the same as the in-process loader evaluation used before the workers shared batches: cached features
    # of older runs stay valid.
    config = load_config(None, base)
    before = build_sequence_loader(f"{fashion_mnist_shards}/val", composer=composer_options(config), num_views=4,
                                   batch_size=64, rank=0, world_size=1, num_workers=0, seed=config.train.seed,
                                   train=False)
    assert_same_batches(batches(before), reference)


def test_shared_batches_survive_corrupt_samples_and_uneven_shards_whatever_the_workers(tmp_path):
    shards = make_shards(tmp_path / "s", UNEVEN, corrupt={5, 30})
    with pytest.warns(RuntimeWarning, match="skipping corrupt data"):
        reference = batches(toy_loader(shards, num_workers=0))
    assert sum(len(b["label"]) for b in reference) == 54 and len(reference) == 14  # 56 samples, batches of 4
    for workers in (2, 3):
        loader = toy_loader(shards, num_workers=workers)
        assert len(loader) == 14
        assert_same_batches(batches(loader), reference)
        assert loader.corrupt_samples == 2  # each corrupt sample counted once, by the worker that rendered it


def test_a_batch_of_only_corrupt_samples_keeps_the_order(tmp_path):
    """Worker 0's first batch is all corrupt: without its empty marker, its next batch would jump the turn."""
    shards = make_shards(tmp_path / "s", [6, 6], corrupt={0, 1, 2, 3})
    with pytest.warns(RuntimeWarning):
        reference = batches(toy_loader(shards, num_workers=0, space=IDENTITY))
    assert epoch_ids(toy_loader(shards, num_workers=2, space=IDENTITY)) == [[4, 5, 6, 7], [8, 9, 10, 11]]
    assert_same_batches(batches(toy_loader(shards, num_workers=2, space=IDENTITY)), reference)


def test_spawned_training_workers_give_the_forked_ones_batches(tmp_path):
    """The start method is an option of the loader; training keeps the platform's default."""
    shards = make_shards(tmp_path / "s", [8, 8, 8, 8])
    forked = toy_loader(shards, num_workers=2, worker_split="shards", train=True)
    assert forked.multiprocessing_context is None
    spawned = toy_loader(shards, num_workers=2, worker_split="shards", train=True, context="spawn")
    assert_same_batches(batches(spawned), batches(forked))


def test_bad_worker_split_or_start_method_is_a_data_error(tmp_path):
    shards = make_shards(tmp_path / "s", [4, 4])
    with pytest.raises(DataError, match="worker_split must be 'shards', or 'batches' for a loader with train=False"):
        toy_loader(shards, num_workers=0, train=True)
    with pytest.raises(DataError, match="multiprocessing_context must be fork, spawn, forkserver or None"):
        toy_loader(shards, num_workers=1, context="thread")


def test_eval_loader_workers_default_to_the_cores_up_to_4_with_a_gpu_none_without_and_are_checked():
    expected = min(4, usable_cores()) if torch.cuda.is_available() else 0
    assert eval_loader_workers(load_config(None, [])) == expected
    assert eval_loader_workers(load_config(None, ["eval.loader_workers=3"])) == 3
    assert eval_loader_workers(load_config(None, ["eval.loader_workers=0"])) == 0
    with pytest.raises(ConfigError, match="eval.loader_workers must be >= 0"):
        load_config(None, ["eval.loader_workers=-1"])


def test_the_views_depend_on_the_seed_not_on_the_worker(tmp_path):
    """Guard against a test that passes because every view is identical: two seeds, two renderings."""
    shards = make_shards(tmp_path / "s", [8, 8])
    first = batches(toy_loader(shards, num_workers=0))[0]["views"]
    second = batches(toy_loader(shards, num_workers=0))[1]["views"]
    assert not torch.equal(first, second)


def test_workers_render_in_a_process_that_started_ray(ray_local, fashion_mnist_shards, tmp_path):
    """Forking loader workers from a Ray driver crashed once (a double free in the child): the evaluation's workers
    come from a forkserver instead."""
    config = load_config(None, tiny_overrides(fashion_mnist_shards, tmp_path, "sqlite://", "ray")
                         + ["eval.loader_workers=2"])
    assert sum(len(b["label"]) for b in build_frozen_view_loader(config, "val", 4)) == 1600


def test_in_a_ray_task_the_usable_cores_are_the_cpus_ray_assigned(ray_local):
    """A sweep trial's evaluation runs as a Ray task: with a GPU, its loader workers stay within the task's CPUs."""
    @ray_local.remote(num_cpus=1)
    def cores_in_a_task() -> int:
        return usable_cores()

    assert ray_local.get(cores_in_a_task.remote()) == 1
    assert usable_cores() == len(os.sched_getaffinity(0))  # the driver: the machine's cores, not a task's share


WORKER_MODULE_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.helpers.shards import where_workers_import_from
print(where_workers_import_from(Path({shards!r})))
"""


def test_forkserver_workers_import_the_code_of_a_script_that_put_the_project_on_sys_path(tmp_path):
    """Python < 3.13 starts the forkserver without the parent's sys.path: a script run from elsewhere would have
    its workers import another installed copy of the project, or fail to import it."""
    shards = make_shards(tmp_path / "s", [4, 4])
    script = WORKER_MODULE_SCRIPT.format(root=str(PROJECT_ROOT), shards=str(shards))
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith(str(PROJECT_ROOT / "data_pipeline")), out.stdout
