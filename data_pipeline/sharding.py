"""Who reads which shards in an epoch, how many batches that gives, and the derived seeds.

Pure functions of (manifest counts, seed, epoch, rank, world size, workers), so every rank computes
the same plan without talking to the others.
"""

from __future__ import annotations

import numpy as np

# Purposes mixed into derived seeds, so the streams drawn for them are independent.
SHARD_ORDER, SHUFFLE, VIEWS = 0, 1, 2


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed from the run seed and integer keys (rank, worker, epoch, purpose...).

    SeedSequence hashes the whole tuple, so seeds differing in any one key are unrelated streams.
    """
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0] >> 1)


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """This epoch's shard order, identical on every rank (a seeded permutation when shuffling)."""
    if not shuffle:
        return list(range(num_shards))
    rng = np.random.default_rng(derive_seed(seed, epoch, SHARD_ORDER))
    return [int(i) for i in rng.permutation(num_shards)]


def worker_shards(order: list[int], rank: int, world_size: int, num_workers: int) -> list[list[int]]:
    """Shard indices per DataLoader worker of `rank`: rank r takes order[r::world], worker w of it
    takes every num_workers-th of those (num_workers=0 means one in-process reader)."""
    mine = order[rank::world_size]
    readers = max(1, num_workers)
    return [mine[w::readers] for w in range(readers)]


def worker_batches(counts: list[int], shards: list[int], batch_size: int, drop_last: bool) -> int:
    n = sum(counts[i] for i in shards)
    return n // batch_size if drop_last else -(-n // batch_size)


def rank_batches(counts: list[int], order: list[int], rank: int, world_size: int, num_workers: int,
                 batch_size: int, drop_last: bool) -> int:
    """Batches one rank's workers yield together (each worker batches its own samples)."""
    return sum(worker_batches(counts, shards, batch_size, drop_last)
               for shards in worker_shards(order, rank, world_size, num_workers))
