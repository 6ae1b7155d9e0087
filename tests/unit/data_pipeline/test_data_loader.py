"""The streaming sequence loader: sharding across ranks/workers, lengths, seeding, corrupt data."""

import dataclasses
import functools
from collections import Counter

import numpy as np
import pytest
import torch

from data_pipeline import ACTION_DIM, ActionSpace, DataError, build_sequence_loader, write_shards
from data_pipeline.sources.affine import AffineComposer
from tests.helpers.runs import same_batch
from tests.helpers.shards import (
    IDENTITY,
    INFO,
    SIDE,
    UNEVEN,
    epoch_ids,
    indexed_image,
    loader,
    make_shards,
    sample_ids,
)


def test_batch_format(tmp_path):
    ld = loader(make_shards(tmp_path / "s", [12, 12]), space=ActionSpace(), num_views=4)
    batch = next(iter(ld))
    assert batch["views"].shape == (4, 4, 1, 12, 12) and batch["views"].dtype == torch.uint8
    assert batch["actions"].shape == (4, 4, ACTION_DIM) and batch["actions"].dtype == torch.float32
    assert batch["rel_actions"].shape == (4, 3, ACTION_DIM) and batch["rel_actions"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (4,)
    assert (ld.num_classes, ld.channels, ld.mean, ld.std, ld.action_dim) == (10, 1, [0.5], [0.25], 7)  # per channel
    assert ld.action_groups["translation"] == [3, 4]
    rel = batch["rel_actions"]  # index j = view j -> j+1
    assert torch.allclose(rel[..., 2:], batch["actions"][:, 1:, 2:] - batch["actions"][:, :-1, 2:], atol=1e-6)


def test_identity_views_carry_their_labels(tmp_path):
    ld = loader(make_shards(tmp_path / "s", [10]), train=False)
    for batch in ld:
        assert [i % 10 for i in sample_ids(batch)] == batch["label"].tolist()


@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_every_rank_gets_same_number_of_batches(tmp_path_factory, epoch):
    shards = make_shards(tmp_path_factory.mktemp("s") / "s", UNEVEN)
    loaders = [loader(shards, rank=r, world_size=2, num_workers=2, batch_size=3) for r in range(2)]
    counts = [len(epoch_ids(ld, epoch)) for ld in loaders]
    assert counts[0] == counts[1] == len(loaders[0]) == len(loaders[1]) > 0


def test_train_length_is_min_over_ranks_of_per_worker_floors(tmp_path):
    # In order (no shuffle) rank 0 would get shards 0,2,4,6; the permutation differs, so recompute here.
    from data_pipeline.sharding import shard_order, worker_shards

    ld = loader(make_shards(tmp_path / "s", UNEVEN), rank=1, world_size=2, num_workers=2, batch_size=4)
    ld.set_epoch(5)
    order = shard_order(7, seed=0, epoch=5, shuffle=True)
    per_rank = [sum(sum(UNEVEN[i] for i in w) // 4 for w in worker_shards(order, r, 2, 2)) for r in range(2)]
    assert len(ld) == min(per_rank)


def test_ranks_and_workers_see_disjoint_samples(tmp_path):
    shards = make_shards(tmp_path / "s", UNEVEN)
    seen = Counter()
    for rank in range(2):
        for ids in epoch_ids(loader(shards, rank=rank, world_size=2, num_workers=2, train=False, batch_size=5)):
            seen.update(ids)
    assert sorted(seen) == list(range(56)) and set(seen.values()) == {1}  # val: every sample exactly once
    train = Counter()
    for rank in range(2):
        ld = loader(shards, rank=rank, world_size=2, num_workers=2, batch_size=3)
        batches = epoch_ids(ld, epoch=3)
        assert len(batches) == len(ld)
        train.update(i for ids in batches for i in ids)
    assert set(train.values()) == {1} and len(train) == 2 * len(ld) * 3


def test_val_length_is_exact_per_rank(tmp_path):
    shards = make_shards(tmp_path / "s", UNEVEN)
    for rank in range(2):
        ld = loader(shards, rank=rank, world_size=2, num_workers=2, train=False, batch_size=4)
        assert len(epoch_ids(ld)) == len(ld)


def test_seeding_is_deterministic_per_rank_worker_epoch(tmp_path):
    shards = make_shards(tmp_path / "s", UNEVEN)

    def actions(rank, epoch, seed=0):
        ld = loader(shards, rank=rank, world_size=2, num_workers=2, space=ActionSpace(), seed=seed, batch_size=3)
        ld.set_epoch(epoch)
        return [(sample_ids(b), b["actions"]) for b in ld]

    def same(a, b):
        return len(a) == len(b) and all(i == j and torch.equal(x, y) for (i, x), (j, y) in zip(a, b))

    base = actions(0, 0)
    assert same(base, actions(0, 0))  # a fresh loader reproduces the epoch exactly
    assert not same(base, actions(0, 1)) and not same(base, actions(1, 0)) and not same(base, actions(0, 0, seed=1))
    # Workers draw different streams: the first batch of each worker (batches alternate between workers).
    assert not torch.equal(base[0][1], base[1][1])


def test_derived_seeds_differ_in_every_key():
    from data_pipeline.sharding import derive_seed

    base = derive_seed(0, 1, 2, 3, 4)
    assert base == derive_seed(0, 1, 2, 3, 4)
    assert len({base, derive_seed(1, 1, 2, 3, 4), derive_seed(0, 2, 2, 3, 4), derive_seed(0, 1, 3, 3, 4),
                derive_seed(0, 1, 2, 4, 4), derive_seed(0, 1, 2, 3, 5)}) == 6


def test_shard_order_is_shared_by_ranks_and_changes_per_epoch(tmp_path):
    shards = make_shards(tmp_path / "s", [4] * 8)
    first = {}
    for epoch in range(3):
        ids = [set(i for b in epoch_ids(loader(shards, rank=r, world_size=2, batch_size=1, train=True), epoch)
                   for i in b) for r in range(2)]
        assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 32
        first[epoch] = frozenset(ids[0])
    assert len(set(first.values())) > 1


def test_val_loader_is_identical_across_epochs(tmp_path):
    ld = loader(make_shards(tmp_path / "s", UNEVEN), num_workers=2, train=False, space=ActionSpace(), batch_size=5)
    epochs = []
    for epoch in (0, 3):
        ld.set_epoch(epoch)
        epochs.append(list(ld))
    assert len(epochs[0]) == len(epochs[1]) == len(ld) == 9 + 3  # workers hold 42 and 14 samples
    for a, b in zip(*epochs):
        assert same_batch(a, b)
    assert epochs[0][-1]["views"].shape[0] < 5  # partial batches are kept


def test_corrupt_sample_is_skipped_and_counted(tmp_path):
    ld = loader(make_shards(tmp_path / "s", [6, 6], corrupt={3}), train=False, batch_size=4)
    with pytest.warns(RuntimeWarning, match="skipping corrupt data in sample 00000003"):
        ids = [i for b in epoch_ids(ld) for i in b]
    assert sorted(ids) == [i for i in range(12) if i != 3] and ld.corrupt_samples == 1


def test_corrupt_samples_in_worker_processes_are_counted(tmp_path):
    ld = loader(make_shards(tmp_path / "s", [6, 6], corrupt={1, 8}), num_workers=2, train=False, batch_size=4)
    ids = [i for b in epoch_ids(ld) for i in b]  # (the warnings go to the workers' stderr)
    assert len(ids) == 10 and ld.corrupt_samples == 2


@dataclasses.dataclass(frozen=True)
class _FailsOnLabel3(AffineComposer):
    """Decodes everything, but cannot compose a sequence from a record labelled 3 (a view that will not decode)."""

    def compose(self, records, num_views, generator):
        if any(label == 3 for _, label in records):
            raise ValueError("view does not decode")
        return super().compose(records, num_views, generator)


def test_a_record_that_fails_to_compose_is_skipped_counted_and_the_rest_batched(tmp_path):
    shards = make_shards(tmp_path / "s", [6, 6])
    ld = build_sequence_loader(str(shards), composer=functools.partial(_FailsOnLabel3.for_shards, IDENTITY, SIDE + 4),
                               num_views=3, batch_size=4, rank=0, world_size=1, num_workers=0, seed=0, train=False)
    with pytest.warns(RuntimeWarning, match="view does not decode"):
        ids = [i for b in epoch_ids(ld) for i in b]
    assert sorted(ids) == [i for i in range(12) if i % 10 != 3] and ld.corrupt_samples == 1


def test_train_rank_keeps_its_batch_count_despite_corrupt_samples(tmp_path):
    ld = loader(make_shards(tmp_path / "s", [8, 8], corrupt={0, 1, 2}), batch_size=4)
    assert len(ld) == 4
    with pytest.warns(RuntimeWarning):
        assert len(epoch_ids(ld)) == 4


def test_missing_shard_file_is_named(tmp_path):
    shards = make_shards(tmp_path / "s", [4, 4])
    (shards / "shard-000001.tar").unlink()
    with pytest.raises(DataError, match="shard-000001.tar listed in the manifest is missing"):
        list(loader(shards, num_workers=2, train=False))


def test_too_few_shards_for_ranks_and_workers_is_clear_error(tmp_path):
    shards = make_shards(tmp_path / "s", [4, 4, 4])
    with pytest.raises(DataError,
                       match=r"has 3 shards but 2 ranks x 2 loader workers need at least 4.*samples_per_shard"):
        loader(shards, world_size=2, num_workers=2)


def test_loader_over_written_shards(tmp_path):
    images = np.stack([indexed_image(i) for i in range(20)])
    write_shards(images, np.arange(20) % 10, tmp_path / "s", samples_per_shard=5, dataset_info=INFO, progress=False)
    ld = loader(f"file://{tmp_path / 's'}", num_workers=1, train=False, batch_size=8)
    assert sorted(i for b in epoch_ids(ld) for i in b) == list(range(20))


def resampling_loader(shards, rank=0, world_size=1, num_workers=0, batches=7, seed=0):
    return build_sequence_loader(str(shards), composer=functools.partial(AffineComposer.for_shards, IDENTITY, SIDE + 4),
                                 num_views=3, batch_size=4, rank=rank, world_size=world_size, num_workers=num_workers,
                                 seed=seed, train=True, shuffle_buffer=8, resample_batches=batches)


def test_resampled_ranks_take_exactly_the_asked_batches_whatever_the_shards(tmp_path):
    shards = make_shards(tmp_path / "s", [9, 3])  # 2 shards for 3 ranks x 2 workers: too few to split, fine to draw
    for rank in range(3):
        ld = resampling_loader(shards, rank=rank, world_size=3, num_workers=2)
        batches = epoch_ids(ld)
        assert len(ld) == len(batches) == 7 and all(len(b) == 4 for b in batches)


def test_resampled_draws_are_seeded_per_rank_and_epoch_and_may_repeat_samples(tmp_path):
    shards = make_shards(tmp_path / "s", UNEVEN)
    ids = {(rank, epoch): epoch_ids(resampling_loader(shards, rank=rank, world_size=2, batches=20), epoch)
           for rank in (0, 1) for epoch in (0, 1)}
    assert ids[0, 0] == epoch_ids(resampling_loader(shards, rank=0, world_size=2, batches=20), 0)
    assert ids[0, 0] != ids[0, 1] and ids[0, 0] != ids[1, 0]
    drawn = Counter(i for b in ids[0, 0] for i in b)
    assert max(drawn.values()) > 1  # 80 draws from 56 samples, with replacement


def test_resampling_a_set_without_valid_samples_fails_instead_of_spinning(tmp_path):
    shards = make_shards(tmp_path / "s", [3, 3], corrupt=set(range(6)))
    with pytest.warns(RuntimeWarning), pytest.raises(DataError, match="shards in a row held no valid sample"):
        epoch_ids(resampling_loader(shards))


def test_resampling_is_for_training_loaders(tmp_path):
    shards = make_shards(tmp_path / "s", [4, 4])
    with pytest.raises(DataError, match="resample_batches must be >= 1 and for a training loader"):
        build_sequence_loader(str(shards), composer=functools.partial(AffineComposer.for_shards, IDENTITY, SIDE + 4),
                              num_views=3, batch_size=4, rank=0, world_size=1, num_workers=0, seed=0, train=False,
                              resample_batches=5)


def test_a_brace_pattern_reads_only_the_shards_it_names(tmp_path):
    shards = make_shards(tmp_path / "s", [4, 4, 4, 4])  # samples 0-3, 4-7, 8-11, 12-15
    ld = build_sequence_loader(str(shards), composer=functools.partial(AffineComposer.for_shards, IDENTITY, SIDE + 4),
                               num_views=3, batch_size=4, rank=0, world_size=1, num_workers=0, seed=0, train=False,
                               shard_pattern="shard-{000001..000002}.tar")
    assert ld.manifest.num_samples == 8 and sorted(i for b in epoch_ids(ld) for i in b) == list(range(4, 12))
    with pytest.raises(DataError, match=r"has no shard shard-000004.tar \(4 of the 5 .* holds shard-000000.tar"):
        build_sequence_loader(str(shards), composer=functools.partial(AffineComposer.for_shards, IDENTITY, SIDE + 4),
                              num_views=3, batch_size=4, rank=0, world_size=1, num_workers=0, seed=0, train=False,
                              shard_pattern="shard-{000003..000007}.tar")
