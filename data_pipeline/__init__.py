"""Data for seq-JEPA: dataset sources, shard sets, streaming sequence loading, batched transformations.

Imports point one way: the trainer imports this package's public names (below), never its modules, and
this package never imports the trainer. The names load lazily (PEP 562), each with its module on first use:
importing the package, or a light module of it such as the dataset registry (`data_pipeline.datasets`, which a
config check reads), does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DataError": "errors", "NotFound": "errors",
    "ActionSpace": "transforms", "ACTION_GROUPS": "transforms", "ACTION_DIM": "transforms",
    "SequenceLoader": "loader", "build_sequence_loader": "loader", "StreamSpec": "stream",
    "DATASETS": "datasets", "DatasetSpec": "datasets", "dataset_names": "datasets", "dataset_spec": "datasets",
    "composer_for": "datasets", "load_option_names": "datasets",
    "AffineOptions": "datasets", "AugmentationOptions": "datasets", "ThreeDIEOptions": "datasets",
    "GlimpseOptions": "datasets",
    "prepare_shards": "prepare", "prepare_fashion_mnist_shards": "prepare", "write_dataset": "prepare",
    "read_manifest": "shards", "write_shards": "shards", "verify_shards": "shards", "Manifest": "shards",
    "upload_shard_set": "shards",
    "S3Options": "storage", "S3Store": "storage", "is_remote": "storage", "join": "storage",
    "StreamPosition": "position",
    "RENDER_INPUTS": "sources.base", "render_planned": "sources.base",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
