"""Data for seq-JEPA: dataset sources, shard sets, streaming sequence loading, batched transformations.

Imports point one way: the trainer imports this package's public names (below), never its modules, and
this package never imports the trainer.
"""

from data_pipeline.composers import ComposerOptions, composer_for
from data_pipeline.errors import DataError
from data_pipeline.loader import SequenceLoader, build_sequence_loader
from data_pipeline.position import StreamPosition
from data_pipeline.prepare import prepare_fashion_mnist_shards, prepare_shards
from data_pipeline.shards import Manifest, read_manifest, upload_shard_set, verify_shards, write_shards
from data_pipeline.storage import S3Options, S3Store, is_remote, join
from data_pipeline.transforms import ACTION_DIM, ACTION_GROUPS, ActionSpace

__all__ = ["DataError", "ActionSpace", "ACTION_GROUPS", "ACTION_DIM", "build_sequence_loader",
           "SequenceLoader", "ComposerOptions", "composer_for", "prepare_fashion_mnist_shards", "prepare_shards",
           "read_manifest", "write_shards", "verify_shards", "Manifest", "S3Options", "S3Store", "is_remote", "join",
           "upload_shard_set", "StreamPosition"]
