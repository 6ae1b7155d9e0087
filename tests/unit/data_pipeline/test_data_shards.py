"""Shard sets: writing, the manifest, verification, shard locations."""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from data_pipeline import DataError, read_manifest, verify_shards, write_shards
from data_pipeline.shards import shard_urls, write_samples

INFO = {"num_classes": 10, "class_names": [str(i) for i in range(10)], "mean": 0.5, "std": 0.25}


def _data(n=25, shape=(6, 5)):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % 10


def test_manifest_records_counts_and_checksums(tmp_path):
    images, labels = _data()
    manifest = write_shards(images, labels, tmp_path / "s", samples_per_shard=10, dataset_info=INFO,
                            dataset="toy", split="val", progress=False)
    doc = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert doc["schema_version"] == 1 and (doc["dataset"], doc["split"], doc["num_samples"]) == ("toy", "val", 25)
    assert [s["name"] for s in doc["shards"]] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [s["num_samples"] for s in doc["shards"]] == [10, 10, 5]
    for shard in doc["shards"]:
        data = (tmp_path / "s" / shard["name"]).read_bytes()
        assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()
    assert set(doc["fields"]) == {"image.png", "label.cls"}
    assert doc["dataset_info"] | INFO == doc["dataset_info"]
    assert (doc["dataset_info"]["channels"], doc["dataset_info"]["height"], doc["dataset_info"]["width"]) == (1, 6, 5)
    assert read_manifest(tmp_path / "s") == manifest


def test_samples_are_lossless_png_and_ascii_labels(tmp_path):
    images, labels = _data(n=3)
    write_shards(images, labels, tmp_path / "s", dataset_info=INFO, progress=False)
    with tarfile.open(tmp_path / "s" / "shard-000000.tar") as tar:
        names = tar.getnames()
        png = tar.extractfile("00000001.image.png").read()
        label = tar.extractfile("00000001.label.cls").read()
    assert names[:2] == ["00000000.image.png", "00000000.label.cls"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), images[1]) and label == b"1"


def test_rgb_images_and_reproducible_checksums(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    a = write_shards(images, np.zeros(4), tmp_path / "a", dataset_info=INFO, progress=False)
    b = write_shards(images, np.zeros(4), tmp_path / "b", dataset_info=INFO, progress=False)
    assert a.dataset_info["channels"] == 3 and a.shards == b.shards


def test_rewrite_replaces_set_and_leaves_no_temporary_folders(tmp_path):
    images, labels = _data()
    write_shards(images, labels, tmp_path / "s", samples_per_shard=5, dataset_info=INFO, progress=False)
    write_shards(images[:7], labels[:7], tmp_path / "s", samples_per_shard=5, dataset_info=INFO, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["manifest.json", "shard-000000.tar",
                                                                  "shard-000001.tar"]


def test_interrupted_write_leaves_nothing(tmp_path):
    def samples_then_interrupt():
        for _ in range(25):  # two full shards are on disk when the interruption comes
            yield {"image.png": b"x", "label.cls": b"0"}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_samples(samples_then_interrupt(), 30, tmp_path / "s", fields={}, samples_per_shard=10,
                      dataset_info={**INFO, "channels": 1, "height": 1, "width": 1}, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_source_that_yields_fewer_samples_than_announced_is_refused(tmp_path):
    samples = ({"image.png": b"x", "label.cls": b"0"} for _ in range(5))
    with pytest.raises(DataError, match="announced 6 train samples but gave 5"):
        write_samples(samples, 6, tmp_path / "s", fields={}, dataset="toy",
                      dataset_info={**INFO, "channels": 1, "height": 1, "width": 1}, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_folder_that_is_not_a_shard_set(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a shard set"):
        write_shards(*_data(), tmp_path, dataset_info=INFO, progress=False)


def test_incomplete_dataset_info_is_clear_error(tmp_path):
    with pytest.raises(DataError, match="dataset_info lacks mean, std"):
        write_shards(*_data(), tmp_path / "s", dataset_info={"num_classes": 10, "class_names": []}, progress=False)


def _write_manifest(folder, **changes):
    doc = json.loads((folder / "manifest.json").read_text())
    doc.update(changes)
    (folder / "manifest.json").write_text(json.dumps(doc))


def test_unknown_schema_version_is_clear_error(tmp_path):
    write_shards(*_data(), tmp_path / "s", dataset_info=INFO, progress=False)
    _write_manifest(tmp_path / "s", schema_version=7)
    with pytest.raises(DataError, match=r"schema_version 7.*knows 1"):
        read_manifest(tmp_path / "s")


def test_manifest_missing_keys_or_file_is_clear_error(tmp_path):
    with pytest.raises(DataError, match="manifest.json is missing"):
        read_manifest(tmp_path)
    write_shards(*_data(), tmp_path / "s", dataset_info=INFO, progress=False)
    doc = json.loads((tmp_path / "s" / "manifest.json").read_text())
    del doc["shards"], doc["dataset_info"]["std"]
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="lacks shards, dataset_info.std"):
        read_manifest(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        read_manifest(tmp_path / "s")


def test_verify_shards_names_the_bad_shard(tmp_path):
    write_shards(*_data(), tmp_path / "s", samples_per_shard=10, dataset_info=INFO, progress=False)
    assert verify_shards(tmp_path / "s").num_samples == 25
    shard = tmp_path / "s" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="shard-000001.tar does not match"):
        verify_shards(tmp_path / "s")
    shard.unlink()
    with pytest.raises(DataError, match="shard-000001.tar listed in the manifest is missing"):
        verify_shards(tmp_path / "s")


def test_shard_locations_path_and_file_url_agree_other_schemes_are_refused(tmp_path):
    manifest = write_shards(*_data(), tmp_path / "s", samples_per_shard=10, dataset_info=INFO, progress=False)
    assert read_manifest(f"file://{tmp_path / 's'}") == manifest
    assert shard_urls(f"file://{tmp_path / 's'}", manifest)[0] == str(tmp_path / "s" / "shard-000000.tar")
    with pytest.raises(DataError, match="unsupported location gs://bucket/train; use a local path"):
        read_manifest("gs://bucket/train")


def test_verify_shards_reports_a_shard_the_manifest_does_not_list(tmp_path):
    write_shards(*_data(), tmp_path / "s", samples_per_shard=10, dataset_info=INFO, progress=False)
    (tmp_path / "s" / "shard-000009.tar").write_bytes(b"stray")
    with pytest.raises(DataError, match="shard-000009.tar is a shard the manifest .* does not list"):
        verify_shards(tmp_path / "s")
