"""Reading DCP checkpoints without running code from the file.

torch.distributed.checkpoint reads tensors with `torch.load(weights_only=True)`, but unpickles the
`.metadata` file with plain `pickle` and the non-tensor values (optimizer hyper-parameters) with
`torch.load(weights_only=False)`: a crafted checkpoint could run arbitrary code on load. The reader
and planner here close both doors: metadata goes through an unpickler that only builds DCP's own
metadata classes and plain containers, and values through `weights_only=True`.
"""

from __future__ import annotations

import collections
import io
import pickle

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

_SAFE_BUILTINS = {"set", "frozenset", "slice", "complex", "bytearray"}
_PATHS = {"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint's metadata asked for a Python object that no checkpoint needs."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        allowed = (
            module.startswith("torch.distributed.checkpoint.")
            or (module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)))
            or (module == "torch.serialization" and name == "_get_layout")
            or (module == "builtins" and name in _SAFE_BUILTINS)
            or (module == "collections" and name == "OrderedDict")
            or (module == "pathlib" and name in _PATHS)  # the checkpoint id DCP records
        )
        if not allowed:
            raise UnsafeCheckpointError(f"checkpoint metadata refers to {module}.{name}, which a checkpoint never "
                                        "holds; refusing to load it")
        if module == "collections":
            return collections.OrderedDict
        return super().find_class(module, name)


class SafeReader(FileSystemReader):
    """A FileSystemReader whose metadata unpickling admits DCP's own classes only."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            metadata = _MetadataUnpickler(io.BytesIO(stream.read())).load()
        if not isinstance(metadata, Metadata):
            raise UnsafeCheckpointError(f"{path} holds a {type(metadata).__name__}, not checkpoint metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """Non-tensor values (learning rates, betas, step counts) read with `weights_only=True`."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        loaded = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded
