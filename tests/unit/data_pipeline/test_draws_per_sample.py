"""`draws_per_sample`: one read of a sample serves several training sequences, never two in one batch."""

from __future__ import annotations

import collections
import functools
import random

import pytest
import torch

from data_pipeline import DataError, build_sequence_loader
from data_pipeline.sources.affine import AffineComposer
from data_pipeline.stream import _redrawn_shuffle
from data_pipeline.transforms import ActionSpace
from tests.helpers.shards import IDENTITY, SIDE, UNEVEN, make_shards, sample_ids


def _loader(shards, draws, num_workers=0, batch_size=4, train=True):
    return build_sequence_loader(str(shards), composer=functools.partial(AffineComposer.for_shards, IDENTITY,
                                                                         SIDE + 4),
                                 num_views=3, batch_size=batch_size, rank=0, world_size=1, num_workers=num_workers,
                                 seed=0, train=train, shuffle_buffer=8, draws_per_sample=draws)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_sample_drawn_k_times_per_epoch_never_twice_in_a_batch(tmp_path, num_workers):
    shards = make_shards(tmp_path / "s", UNEVEN)  # 56 samples
    single, triple = _loader(shards, 1, num_workers), _loader(shards, 3, num_workers)
    assert len(triple) >= 3 * len(single) - 2 * max(1, num_workers)  # the same samples, three sequences each
    triple.set_epoch(0)
    batches = list(triple)
    assert len(batches) == len(triple)
    counts = collections.Counter()
    tail = 3 * max(1, num_workers)  # a worker's last batches: fewer than a batch of samples left to draw from
    for index, batch in enumerate(batches):
        ids = sample_ids(batch)
        if index < len(batches) - tail:
            assert len(set(ids)) == len(ids), f"batch {index} holds one sample twice: {sorted(ids)}"
        counts.update(ids)
        draws = {key.rsplit("#", 1)[1] for key in batch["sample_keys"]}
        assert draws <= {"0", "1", "2"}
    assert set(counts.values()) <= {1, 2, 3} and sum(counts.values()) == 4 * len(batches)
    assert sum(1 for c in counts.values() if c == 3) >= 56 - 2 * 4 * max(1, num_workers)  # all but the dropped tail


def test_the_draws_of_one_sample_have_their_own_views(tmp_path):
    shards = make_shards(tmp_path / "s", [16, 16])
    composer = functools.partial(AffineComposer.for_shards, ActionSpace(), SIDE + 4)
    ld = build_sequence_loader(str(shards), composer=composer,
                               num_views=3, batch_size=4, rank=0, world_size=1, num_workers=0, seed=0, train=True,
                               shuffle_buffer=8, draws_per_sample=2)
    ld.set_epoch(0)
    actions = collections.defaultdict(list)
    for batch in ld:
        for key, action in zip(batch["sample_keys"], batch["actions"]):
            actions[key.rsplit("#", 1)[0]].append(action)
    pairs = [a for a in actions.values() if len(a) == 2]
    assert pairs and all(not torch.equal(a, b) for a, b in pairs)


def test_spacing_holds_for_any_buffer_and_only_the_tail_may_break_it():
    for seed, buffer, draws, spacing in [(0, 1, 2, 4), (1, 3, 5, 7), (2, 50, 3, 16), (3, 8, 4, 1)]:
        items = [(str(i), i) for i in range(100)]
        out = list(_redrawn_shuffle(items, buffer, draws, spacing, random.Random(seed)))
        assert collections.Counter(record for _, record in out) == {i: draws for i in range(100)}
        last = {}
        for position, (_, record) in enumerate(out):
            if record in last and position < len(out) - spacing * draws:
                assert position - last[record] >= spacing, (seed, record, position, last[record])
            last[record] = position


def test_draws_per_sample_is_for_training_only(tmp_path):
    shards = make_shards(tmp_path / "s", [8, 8])
    with pytest.raises(DataError, match="draws_per_sample must be >= 1, and 1 for a loader with train=False"):
        _loader(shards, 2, train=False)
    with pytest.raises(DataError, match="draws_per_sample"):
        _loader(shards, 0)
