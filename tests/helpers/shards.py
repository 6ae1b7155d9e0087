"""A toy shard set whose every view says which sample it came from, and loaders over it.

`make_shards(folder, sizes)` writes 8x8 grey images that carry their sample index in two pixels (`indexed_image`);
with the `IDENTITY` action space a view is the source image on a 12x12 canvas, so `sample_ids(batch)` reads the
indices back and `epoch_ids(loader)` lists them per batch. `where_workers_import_from` reports which copy of the
project a forkserver loader worker imports.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json

import numpy as np
import webdataset as wds
from PIL import Image

from data_pipeline import ActionSpace, build_sequence_loader
from data_pipeline.sources.affine import AffineComposer

INFO = {"num_classes": 10, "class_names": [str(i) for i in range(10)], "mean": 0.5, "std": 0.25}
IDENTITY = ActionSpace(rotation_deg=0, scale_min=1, scale_max=1, translate=0, brightness=0, contrast=0)
SIDE = 8  # source images are 8x8, so the canvas (and an identity view) is 12x12


def indexed_image(index: int) -> np.ndarray:
    """An image that carries its sample index in two pixels, readable from an identity view."""
    image = np.full((SIDE, SIDE), 100, dtype=np.uint8)
    image[0, 0], image[0, 1] = index % 256, index // 256
    return image


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def make_shards(folder, sizes, corrupt=()):
    """A shard set with the given per-shard sizes; sample indices listed in `corrupt` get broken PNGs."""
    folder.mkdir(parents=True)
    entries, index = [], 0
    for k, size in enumerate(sizes):
        name = f"shard-{k:06d}.tar"
        with wds.TarWriter(str(folder / name), encoder=False) as sink:
            for _ in range(size):
                png = b"not a png" if index in corrupt else _png(indexed_image(index))
                sink.write({"__key__": f"{index:08d}", "image.png": png, "label.cls": str(index % 10).encode()})
                index += 1
        entries.append({"name": name, "num_samples": size, "sha256": "-", "bytes": (folder / name).stat().st_size})
    info = {**INFO, "channels": 1, "height": SIDE, "width": SIDE}
    manifest = {"schema_version": 1, "dataset": "toy", "split": "train", "num_samples": index, "shards": entries,
                "fields": {}, "dataset_info": info}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def loader(shards, *, rank=0, world_size=1, num_workers=0, train=True, batch_size=4, seed=0,
           space=IDENTITY, num_views=3):
    return build_sequence_loader(str(shards), composer=functools.partial(AffineComposer.for_shards, space, SIDE + 4),
                                 num_views=num_views, batch_size=batch_size, rank=rank, world_size=world_size,
                                 num_workers=num_workers, seed=seed, train=train, shuffle_buffer=8)


def sample_ids(batch) -> list[int]:
    view = batch["views"][:, 0, 0].long()  # identity: the source sits at offset 2 in the canvas
    return (view[:, 2, 2] + 256 * view[:, 2, 3]).tolist()


def epoch_ids(ld, epoch=0) -> list[list[int]]:
    ld.set_epoch(epoch)
    return [sample_ids(b) for b in ld]


UNEVEN = [9, 3, 14, 6, 11, 5, 8]  # 7 shards, 56 samples


def where_workers_import_from(shards) -> str:
    """The file of `data_pipeline` in a forkserver worker of this process (a composer reports it)."""
    loader = build_sequence_loader(str(shards), composer=functools.partial(_ReportsModule.for_shards, IDENTITY,
                                                                            SIDE + 4),
                                   num_views=2, batch_size=4, rank=0, world_size=1, num_workers=1, seed=0,
                                   train=False, worker_split="batches", multiprocessing_context="forkserver")
    return next(iter(loader))["module_file"]


@dataclasses.dataclass(frozen=True)
class _ReportsModule(AffineComposer):
    def compose(self, records, num_views, generator):
        import data_pipeline

        return {**super().compose(records, num_views, generator), "module_file": data_pipeline.__file__}
