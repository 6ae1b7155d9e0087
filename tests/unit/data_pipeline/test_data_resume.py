"""A training loader stopped after any batch and resumed from its position gives the rest of the epoch
exactly: the same batches (samples, views, actions), in the same order, nothing skipped or repeated."""

import functools
import itertools
import json

import pytest

from data_pipeline import DataError, build_sequence_loader
from data_pipeline.position import StreamPosition
from data_pipeline.sources.affine import AffineComposer
from data_pipeline.transforms import ActionSpace
from tests.helpers.runs import same_batch
from tests.helpers.shards import SIDE, UNEVEN, make_shards


def _loader(shards, num_workers, **kw):
    return build_sequence_loader(str(shards), composer=functools.partial(AffineComposer.for_shards, ActionSpace(),
                                                                         SIDE + 4),
                                 num_views=3, batch_size=3, rank=kw.pop("rank", 0), world_size=kw.pop("world_size", 1),
                                 num_workers=num_workers, seed=5, train=True, shuffle_buffer=8, **kw)


def _first(ld, epoch, k):
    """The first k batches of the epoch and the position after them."""
    ld.set_epoch(epoch)
    batches = list(itertools.islice(ld, k))
    return batches, ld.position


def _resumed(shards, num_workers, position, **kw):
    ld = _loader(shards, num_workers, **kw)
    # Through JSON, as a checkpoint stores it.
    ld.resume_from(StreamPosition.from_dict(json.loads(json.dumps(position.to_dict()))))
    ld.set_epoch(position.epoch)  # the trainer sets the epoch again: the position still holds
    return list(ld)


def _check_every_cut(shards, num_workers, cuts=None, **kw):
    full, _ = _first(_loader(shards, num_workers, **kw), 1, 10 ** 6)
    assert full
    for k in cuts or range(len(full) + 1):
        head, position = _first(_loader(shards, num_workers, **kw), 1, k)
        assert position.batches == k
        rest = _resumed(shards, num_workers, position, **kw)
        assert len(head) + len(rest) == len(full), f"cut at {k}: {len(head)} + {len(rest)} != {len(full)}"
        for i, (a, b) in enumerate(zip(head + rest, full)):
            assert same_batch(a, b), f"cut at {k}: batch {i} differs"


def test_in_process_reader_resumes_after_every_batch(tmp_path):
    _check_every_cut(make_shards(tmp_path / "s", UNEVEN), num_workers=0)


@pytest.mark.parametrize("num_workers", [2, 3])
def test_worker_processes_resume_in_the_same_turn_order(tmp_path, num_workers):
    # Uneven shards: workers run dry at different times, so the turn order changes near the end.
    shards = make_shards(tmp_path / "s", UNEVEN)
    length = len(_loader(shards, num_workers))
    _check_every_cut(shards, num_workers, cuts=sorted({0, 1, 2, 4, length // 2, length - 2, length - 1, length}))


def test_resume_holds_for_each_rank_of_a_group(tmp_path):
    shards = make_shards(tmp_path / "s", UNEVEN)
    for rank in range(2):
        _check_every_cut(shards, 2, cuts=[1, 3], rank=rank, world_size=2)


def test_resume_after_corrupt_samples_forced_a_second_pass(tmp_path):
    # Most of the rank's samples are broken: the epoch needs more than one pass over its shards.
    shards = make_shards(tmp_path / "s", [6, 6], corrupt=set(range(0, 12)) - {1, 2, 3, 7, 8, 9, 10})
    with pytest.warns(RuntimeWarning):
        _check_every_cut(shards, 0)


def test_resampled_epochs_resume_too(tmp_path):
    _check_every_cut(make_shards(tmp_path / "s", UNEVEN), 2, cuts=[0, 3, 5], resample_batches=6)


def test_sample_keys_name_shard_and_sample(tmp_path):
    batch = next(iter(_loader(make_shards(tmp_path / "s", UNEVEN), 0)))
    assert len(batch["sample_keys"]) == 3
    assert all(k.startswith("shard-") and k.count("/") == 1 for k in batch["sample_keys"])


def test_computed_position_matches_the_tracked_one_without_corruption(tmp_path):
    shards = make_shards(tmp_path / "s", UNEVEN)
    for num_workers in (0, 2, 3):
        ld = _loader(shards, num_workers)
        for k in range(len(ld) + 1):
            _, tracked = _first(_loader(shards, num_workers), 1, k)
            assert ld.position_after(1, k) == tracked, (num_workers, k)


def test_a_position_of_another_layout_is_refused(tmp_path):
    shards = make_shards(tmp_path / "s", UNEVEN)
    _, position = _first(_loader(shards, 2), 0, 2)
    with pytest.raises(DataError, match="2 loader workers"):
        _loader(shards, 0).resume_from(position)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterating_leaves_the_global_torch_rng_alone(tmp_path, num_workers):
    # The model's dropout draws from it: a resumed epoch must not shift those draws.
    import torch

    ld = _loader(make_shards(tmp_path / "s", UNEVEN), num_workers)
    before = torch.get_rng_state()
    list(ld)
    assert torch.equal(before, torch.get_rng_state())


def test_several_draws_per_sample_resume_after_every_batch(tmp_path):
    _check_every_cut(make_shards(tmp_path / "s", UNEVEN), num_workers=2, draws_per_sample=3)
