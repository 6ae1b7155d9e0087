"""CIFAR-100 and Tiny-ImageNet sources: the real on-disk formats in, shard samples out, and the shared
augmentation composer that turns decoded samples into sequences of views with their actions."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_pipeline.errors import DataError
from data_pipeline.sources import cifar, tinyimagenet
from data_pipeline.sources.augmented import AugmentationComposer, ImageRecord
from data_pipeline.sources.base import DATASET_INFO_KEYS, encode_jpeg, encode_npy, encode_png
from tests.helpers.raw_datasets import BLUE, GREEN, RED, cifar_rows, dump, flat, write_tinyimagenet

# ---------------------------------------------------------------- CIFAR-100 files, by hand

def marked_images() -> np.ndarray:
    """[pure red, black with marks at (0, 0), (0, 5) and (5, 0), random] as (3, 32, 32, 3) uint8."""
    red = np.zeros((32, 32, 3), np.uint8)
    red[...] = RED
    marked = np.zeros((32, 32, 3), np.uint8)
    marked[0, 0], marked[0, 5], marked[5, 0] = (10, 200, 30), (1, 2, 3), (4, 5, 6)
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return np.stack([red, marked, noise])


def write_cifar(parent: Path, py2: bool = False, n_test: int = 2) -> Path:
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    train = marked_images()
    test = np.random.default_rng(1).integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    dump({"fine_label_names": [f"class{i:03d}" for i in range(100)],
          "coarse_label_names": [f"super{i}" for i in range(20)]}, folder / "meta", py2)
    for name, images, labels in (("train", train, [7, 42, 99]), ("test", test, list(range(n_test)))):
        dump({"batch_label": f"{name} batch", "filenames": [f"{name}_{i}.png" for i in range(len(images))],
              "fine_labels": labels, "coarse_labels": [0] * len(images), "data": cifar_rows(images)},
             folder / name, py2)
    return folder


def decoded(split) -> list[ImageRecord]:
    composer = AugmentationComposer.for_dataset(split.dataset_info)
    return [composer.decode(sample) for sample in split.samples]


def test_cifar_split_counts_fields_and_dataset_info(tmp_path):
    write_cifar(tmp_path, n_test=5)
    train, val = cifar.read_split(tmp_path / "cifar-100-python", "train"), cifar.read_split(tmp_path, "val")
    assert (train.num_samples, val.num_samples) == (3, 5)  # "val" is the test batch; the parent folder works
    samples = list(train.samples)
    assert len(samples) == 3 and all(set(s) == {"image.npy", "label.cls"} for s in samples)
    assert set(train.fields) == {"image.npy", "label.cls"}
    assert [s["label.cls"] for s in samples] == [b"7", b"42", b"99"]
    info = train.dataset_info
    assert set(DATASET_INFO_KEYS) <= set(info)
    assert (info["num_classes"], info["channels"], info["height"], info["width"]) == (100, 3, 32, 32)
    assert info["class_names"][:2] == ["class000", "class001"] and len(info["class_names"]) == 100
    assert info["mean"] == [0.5071, 0.4867, 0.4408] and info["std"] == [0.2675, 0.2565, 0.2761]


@pytest.mark.parametrize("py2", [False, True], ids=["python3-pickle", "python2-pickle"])
def test_cifar_channel_planes_round_trip_exactly(tmp_path, py2):
    write_cifar(tmp_path, py2=py2)
    records = decoded(cifar.read_split(tmp_path, "train"))
    red, marked, noise = (record.image for record in records)
    assert red.shape == (32, 32, 3) and (red == RED).all()  # pure red stays red
    assert tuple(marked[0, 0]) == (10, 200, 30)  # the top-left mark stays top-left
    assert tuple(marked[0, 5]) == (1, 2, 3) and tuple(marked[5, 0]) == (4, 5, 6)  # rows are not columns
    assert marked.sum() == 10 + 200 + 30 + 1 + 2 + 3 + 4 + 5 + 6
    np.testing.assert_array_equal(np.stack([red, marked, noise]), marked_images())  # lossless
    assert [record.label for record in records] == [7, 42, 99]


def test_restricted_unpickler_refuses_arbitrary_globals(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    folder = write_cifar(tmp_path)
    (folder / "train").write_bytes(pickle.dumps({"data": Exploit(), "fine_labels": []}))
    with pytest.raises(DataError, match=r"train.*not allowed") as err:
        cifar.read_split(folder, "train")
    assert str(folder / "train") in str(err.value) and not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        cifar.RestrictedUnpickler(io.BytesIO(pickle.dumps(eval))).load()


def test_cifar_missing_or_malformed_files_name_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        cifar.read_split(tmp_path / "nowhere", "train")
    folder = write_cifar(tmp_path)
    (folder / "meta").unlink()
    with pytest.raises(DataError, match=str(folder / "meta")):
        cifar.read_split(folder, "train")
    folder = write_cifar(tmp_path / "garbage")
    (folder / "test").write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match=str(folder / "test")):
        cifar.read_split(folder, "val")
    (folder / "test").write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]}))
    with pytest.raises(DataError, match=r"test has data uint8 \(2, 100\)"):
        cifar.read_split(folder, "val")
    with pytest.raises(DataError, match="splits train, val"):
        cifar.read_split(folder, "test")


# ---------------------------------------------------------------- Tiny-ImageNet folders, by hand

# wnids.txt lists them unsorted; sorted, n01 -> 0 (red), n02 -> 1 (green), n03 -> 2 (blue)
COLOR_LABEL = {RED: 0, GREEN: 1, BLUE: 2}


def color_label(image: np.ndarray) -> int:
    return COLOR_LABEL[tuple(int(c > 127) * 255 for c in image.mean(axis=(0, 1)))]


def test_tinyimagenet_split_counts_fields_and_dataset_info(tmp_path):
    root = write_tinyimagenet(tmp_path)
    train, val = tinyimagenet.read_split(root, "train"), tinyimagenet.read_split(tmp_path, "val")
    assert (train.num_samples, val.num_samples) == (6, 4)
    assert all(set(s) == {"image.npy", "label.cls"} for s in train.samples)
    info = val.dataset_info
    assert set(DATASET_INFO_KEYS) <= set(info)
    assert (info["num_classes"], info["channels"], info["height"], info["width"]) == (3, 3, 64, 64)
    assert info["class_names"] == ["red thing", "green thing", "blue thing"]  # sorted wnids, first name
    assert info["mean"] == [0.4802, 0.4481, 0.3975] and info["std"] == [0.2302, 0.2265, 0.2262]


def test_tinyimagenet_labels_follow_the_sorted_wnids(tmp_path):
    root = write_tinyimagenet(tmp_path)
    in_order = decoded(tinyimagenet.read_split(root, "train", order_seed=None))
    assert [record.label for record in in_order] == [0, 0, 1, 1, 2, 2]
    permuted = decoded(tinyimagenet.read_split(root, "train"))  # default: a seeded permutation of the files
    assert sorted(record.label for record in permuted) == [0, 0, 1, 1, 2, 2]
    assert all(record.label == color_label(record.image) for record in permuted)


def test_tinyimagenet_val_labels_come_from_the_annotations(tmp_path):
    records = decoded(tinyimagenet.read_split(write_tinyimagenet(tmp_path), "val", order_seed=None))
    assert [record.label for record in records] == [2, 0, 1, 0]
    assert all(record.label == color_label(record.image) for record in records[:3])


def test_tinyimagenet_grayscale_images_become_rgb(tmp_path):
    root = write_tinyimagenet(tmp_path)
    gray = decoded(tinyimagenet.read_split(root, "val", order_seed=None))[3].image
    assert gray.shape == (64, 64, 3) and gray.dtype == np.uint8
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert abs(int(gray[0, 0, 0]) - 128) <= 2


def test_tinyimagenet_samples_are_the_decoded_jpegs(tmp_path):
    root = write_tinyimagenet(tmp_path)
    records = decoded(tinyimagenet.read_split(root, "train", order_seed=None))
    expected = np.asarray(Image.open(root / "train" / "n01000001" / "images" / "n01000001_0.JPEG").convert("RGB"))
    np.testing.assert_array_equal(records[0].image, expected)


def test_tinyimagenet_missing_files_name_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        tinyimagenet.read_split(tmp_path / "nowhere", "train")
    root = write_tinyimagenet(tmp_path / "a")
    (root / "wnids.txt").unlink()
    with pytest.raises(DataError, match=str(root / "wnids.txt")):
        tinyimagenet.read_split(root, "train")
    root = write_tinyimagenet(tmp_path / "b")
    (root / "train" / "n02000002" / "images").rename(root / "train" / "n02000002" / "moved")
    with pytest.raises(DataError, match=str(root / "train" / "n02000002" / "images")):
        tinyimagenet.read_split(root, "train")
    (root / "val" / "images" / "val_2.JPEG").unlink()
    with pytest.raises(DataError, match=str(root / "val" / "images" / "val_2.JPEG")):
        tinyimagenet.read_split(root, "val")
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn09999999\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations.txt line 1"):
        tinyimagenet.read_split(root, "val")


# ---------------------------------------------------------------- the composer

@pytest.fixture
def cifar_records(tmp_path) -> list[ImageRecord]:
    write_cifar(tmp_path)
    return decoded(cifar.read_split(tmp_path, "train"))


@pytest.mark.parametrize("blur", [True, False], ids=["blur", "no-blur"])
@pytest.mark.parametrize("num_views", [2, 3, 4, 5])
def test_compose_gives_the_batch_contract(cifar_records, num_views, blur):
    composer = AugmentationComposer(blur=blur)
    a = 9 if blur else 8
    assert composer.action_dim == a and sorted(i for g in composer.action_groups.values() for i in g) == list(range(a))
    batch = composer.compose(cifar_records, num_views, torch.Generator().manual_seed(0))
    b = len(cifar_records)
    assert batch["views"].dtype == torch.uint8 and batch["views"].shape == (b, num_views, 3, 32, 32)
    assert batch["actions"].dtype == torch.float32 and batch["actions"].shape == (b, num_views, a)
    assert batch["rel_actions"].shape == (b, num_views - 1, a)
    torch.testing.assert_close(batch["rel_actions"], batch["actions"][:, 1:] - batch["actions"][:, :-1])
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [7, 42, 99]
    assert batch["orig"].shape == (b, 3, 32, 32)


def test_image_size_sets_the_view_side(tmp_path):
    records = decoded(tinyimagenet.read_split(write_tinyimagenet(tmp_path), "val"))
    assert AugmentationComposer().compose(records, 3, torch.Generator().manual_seed(0))["views"].shape[-2:] == (64, 64)
    batch = AugmentationComposer(image_size=48).compose(records, 3, torch.Generator().manual_seed(0))
    assert batch["views"].shape == (4, 3, 3, 48, 48)


def test_legacy_view_norm_gives_unit_norm_over_the_view_axis(cifar_records):
    batch = AugmentationComposer(legacy_view_norm=True).compose(cifar_records, 4, torch.Generator().manual_seed(0))
    norms = batch["actions"].norm(dim=1)  # (B, A): each coordinate's vector across the V views
    assert torch.allclose(norms[:, :4], torch.ones_like(norms[:, :4]))  # crop boxes are never all zero
    assert torch.all(torch.isclose(norms, torch.ones_like(norms)) | (norms == 0))  # hue may be 0 in every view
    fixed = AugmentationComposer().compose(cifar_records, 4, torch.Generator().manual_seed(0))
    assert not torch.allclose(fixed["actions"].norm(dim=1)[:, :4], torch.ones(3, 4))
    torch.testing.assert_close(fixed["views"], batch["views"], rtol=0, atol=0)  # only the actions change


def test_compose_is_deterministic_given_the_seed(cifar_records):
    composer = AugmentationComposer()
    first, again = (composer.compose(cifar_records, 3, torch.Generator().manual_seed(5)) for _ in range(2))
    other = composer.compose(cifar_records, 3, torch.Generator().manual_seed(6))
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["views"], other["views"])


def test_composer_survives_pickling(cifar_records):
    composer = AugmentationComposer.for_dataset(cifar.dataset_info(["c"] * 100), blur=False, legacy_view_norm=True,
                                                image_size=24)
    clone = pickle.loads(pickle.dumps(composer))
    assert clone == composer and clone.action_dim == 8
    a, b = (c.compose(cifar_records, 3, torch.Generator().manual_seed(1)) for c in (composer, clone))
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_decode_rejects_samples_that_are_off():
    composer = AugmentationComposer(source_size=(32, 32), num_classes=100)
    good = {"image.npy": encode_npy(flat(RED, 32)), "label.cls": b"3"}
    assert composer.decode(good).label == 3
    assert np.array_equal(composer.decode(good).image, flat(RED, 32))
    png = {"image.png": encode_png(flat(RED, 32)), "label.cls": b"3"}  # shards of the earlier writer
    assert np.array_equal(composer.decode(png).image, flat(RED, 32))
    good = png
    bad = [({"label.cls": b"3"}, "lacks image.png"),
           ({"image.npy": encode_npy(flat(RED, 32)[..., 0]), "label.cls": b"3"}, r"uint8 \(32, 32\), expected"),
           ({"image.npy": encode_npy(flat(RED, 32).astype(np.float32)), "label.cls": b"3"}, "float32"),
           ({"image.npy": encode_npy(flat(RED, 16)), "label.cls": b"3"}, "16x16, expected 32x32"),
           ({**good, "image.png": encode_png(np.zeros((32, 32), np.uint8))}, "mode L"),
           ({**good, "image.png": encode_jpeg(flat(RED, 32))}, "JPEG"),
           ({**good, "image.png": encode_png(flat(RED, 16))}, "16x16, expected 32x32"),
           ({**good, "label.cls": b"3.5"}, "decimal integer"),
           ({**good, "label.cls": b"-1"}, "decimal integer"),
           ({**good, "label.cls": b"cat"}, "decimal integer"),
           ({**good, "label.cls": b"100"}, "outside 0..99")]
    for sample, message in bad:
        with pytest.raises(ValueError, match=message):
            composer.decode(sample)
    with pytest.raises(ValueError, match="share an image shape"):
        AugmentationComposer().compose([ImageRecord(flat(RED, 32), 0), ImageRecord(flat(RED, 16), 0)], 2)
