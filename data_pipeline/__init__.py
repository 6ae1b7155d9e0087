"""Data for seq-JEPA: dataset sources, shard sets, streaming sequence loading, batched transformations.

Imports point one way: the trainer imports this package, never the reverse.
"""

from data_pipeline.errors import DataError
from data_pipeline.loader import SequenceLoader, build_sequence_loader
from data_pipeline.position import StreamPosition
from data_pipeline.prepare import prepare_fashion_mnist_shards, prepare_shards
from data_pipeline.shards import Manifest, read_manifest, upload_shard_set, verify_shards, write_shards
from data_pipeline.storage import S3Options
from data_pipeline.transforms import ACTION_DIM, ACTION_GROUPS, ActionSpace

__all__ = ["DataError", "ActionSpace", "ACTION_GROUPS", "ACTION_DIM", "build_sequence_loader", "SequenceLoader",
           "prepare_fashion_mnist_shards", "prepare_shards", "read_manifest", "write_shards", "verify_shards", "Manifest",
           "S3Options", "upload_shard_set", "StreamPosition"]
