"""PLS sources: STL-10 binary + ImageNet folders (write time) and the glimpse composer (load time).

Every dataset file here is written in its real on-disk format (STL-10's column-major .bin planes,
.npy saliency arrays, class folders of JPEGs with per-image maps under both naming styles).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_pipeline.errors import DataError
from data_pipeline.sources import imagenet, stl10
from data_pipeline.sources.base import (
    DATASET_INFO_KEYS,
    decode_density_png,
    decode_image,
    decode_npy,
    encode_density_png,
    encode_label,
    encode_npy,
    encode_png,
)
from data_pipeline.sources.glimpses import IOR_FLOOR, GlimpseComposer, draw_positions, sample_fixations
from tests.helpers.raw_datasets import STL10_SIDE as S
from tests.helpers.raw_datasets import stl10_images, write_imagenet, write_stl10

# ---------------------------------------------------------------- writers of the real formats

def write_stl10_saliency(root, name: str, n: int, peak=(40, 50)) -> np.ndarray:
    """The released format: `<root>/<name>/saliency_<name>.npy`, float32 (n, 1, 96, 96), sums to 1."""
    maps = np.full((n, 1, S, S), 1.0, dtype=np.float32)
    maps[:, 0, peak[0], peak[1]] = 5000.0
    maps /= maps.sum(axis=(2, 3), keepdims=True)
    (root / name).mkdir(parents=True, exist_ok=True)
    np.save(root / name / f"saliency_{name}.npy", maps)
    return maps


# ---------------------------------------------------------------- STL-10, write time

def test_stl10_train_split_counts_fields_and_info(tmp_path):
    write_stl10(tmp_path / "stl10_binary")
    split = stl10.read_split(tmp_path / "stl10_binary", "train")
    samples = list(split.samples)
    assert split.num_samples == len(samples) == 4
    assert set(samples[0]) == set(split.fields) == {"image.npy", "label.cls"}
    info = split.dataset_info
    assert set(DATASET_INFO_KEYS) <= set(info)
    assert (info["num_classes"], info["channels"], info["height"], info["width"]) == (10, 3, 96, 96)
    assert info["class_names"] == stl10.CLASS_NAMES
    assert info["mean"] == [0.4467, 0.4398, 0.4066] and info["std"] == [0.2241, 0.2215, 0.2239]
    assert info["saliency"] is False and info["labelled"] is True


def test_stl10_column_major_planes_are_read_upright(tmp_path):
    images = write_stl10(tmp_path / "stl10_binary")
    samples = list(stl10.read_split(tmp_path / "stl10_binary", "train").samples)
    for sample, expected in zip(samples, images["train"]):
        image = decode_npy(sample["image.npy"])
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert np.array_equal(image, expected)
        assert tuple(image[0, 0]) == (255, 255, 255)  # top-left stays top-left
        assert tuple(image[3, 70]) == (255, 0, 0) and tuple(image[70, 3]) != (255, 0, 0)  # not transposed


def test_stl10_labels_are_shifted_to_zero_based(tmp_path):
    write_stl10(tmp_path / "stl10_binary")
    labels = [int(s["label.cls"]) for s in stl10.read_split(tmp_path / "stl10_binary", "train").samples]
    assert labels == [0, 1, 2, 3]  # files hold 1, 2, 3, 4


def test_stl10_unlabeled_split_has_label_minus_one_and_says_so(tmp_path):
    write_stl10(tmp_path / "stl10_binary")
    split = stl10.read_split(tmp_path / "stl10_binary", "unlabeled")
    assert split.num_samples == 5
    assert {int(s["label.cls"]) for s in split.samples} == {-1}
    assert split.dataset_info["labelled"] is False and "-1" in split.dataset_info["label_note"]


def test_stl10_val_reads_the_test_files_and_the_parent_folder_works(tmp_path):
    images = write_stl10(tmp_path / "stl10_binary")
    split = stl10.read_split(tmp_path, "val")  # the parent of stl10_binary
    samples = list(split.samples)
    assert split.num_samples == 3
    assert np.array_equal(decode_npy(samples[2]["image.npy"]), images["test"][2])


def test_stl10_saliency_is_stored_as_a_float16_density(tmp_path):
    write_stl10(tmp_path / "stl10_binary")
    maps = write_stl10_saliency(tmp_path / "sal", "test", 3)  # "val" maps carry the release's "test" name
    split = stl10.read_split(tmp_path / "stl10_binary", "val", saliency_root=tmp_path / "sal")
    assert split.dataset_info["saliency"] is True and "saliency.npy" in split.fields
    stored = decode_npy(next(iter(split.samples))["saliency.npy"])
    assert stored.dtype == np.float16 and stored.shape == (96, 96)
    assert stored.astype(np.float64).sum() == pytest.approx(1.0, abs=2e-3)
    assert np.allclose(stored, maps[0, 0], rtol=2e-3, atol=1e-7)


def test_stl10_missing_file_is_a_data_error_naming_it(tmp_path):
    write_stl10(tmp_path / "stl10_binary")
    (tmp_path / "stl10_binary" / "train_y.bin").unlink()
    with pytest.raises(DataError, match="train_y.bin"):
        stl10.read_split(tmp_path / "stl10_binary", "train")
    with pytest.raises(DataError, match="nowhere"):
        stl10.read_split(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match=r"sal/test/saliency_test\.npy does not exist"):
        stl10.read_split(tmp_path / "stl10_binary", "val", saliency_root=tmp_path / "sal")


def test_stl10_truncated_image_file_is_a_data_error(tmp_path):
    write_stl10(tmp_path / "stl10_binary")
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="test_X.bin.*truncated"):
        stl10.read_split(tmp_path / "stl10_binary", "val")


def test_stl10_saliency_count_mismatch_is_a_data_error(tmp_path):
    write_stl10(tmp_path / "stl10_binary")
    write_stl10_saliency(tmp_path / "sal", "train", 7)  # 7 maps for 4 images
    with pytest.raises(DataError, match=r"saliency_train\.npy has 7 maps for 4 images"):
        stl10.read_split(tmp_path / "stl10_binary", "train", saliency_root=tmp_path / "sal")


def test_stl10_saliency_of_the_wrong_size_is_a_data_error(tmp_path):
    write_stl10(tmp_path / "stl10_binary")
    (tmp_path / "sal" / "train").mkdir(parents=True)
    np.save(tmp_path / "sal" / "train" / "saliency_train.npy", np.ones((4, 1, 64, 64), np.float32))
    with pytest.raises(DataError, match="saliency_train.npy holds"):
        stl10.read_split(tmp_path / "stl10_binary", "train", saliency_root=tmp_path / "sal")


# ---------------------------------------------------------------- ImageNet, write time

def test_imagenet_class_indices_follow_the_sorted_folders(tmp_path):
    write_imagenet(tmp_path / "in1k")
    split = imagenet.read_split(tmp_path / "in1k", "train", image_size=32)
    samples = list(split.samples)
    assert split.num_samples == len(samples) == 6
    assert split.dataset_info["class_names"] == ["n01", "n02", "n03"]
    assert split.dataset_info["num_classes"] == 3 and split.dataset_info["mean"] == imagenet.MEAN
    assert [int(s["label.cls"]) for s in samples] == [0, 0, 1, 1, 2, 2]
    assert set(samples[0]) == set(split.fields) == {"image.jpg", "label.cls"}


def test_imagenet_images_are_stored_at_the_shorter_side(tmp_path):
    write_imagenet(tmp_path / "in1k")
    samples = list(imagenet.read_split(tmp_path / "in1k", "val", image_size=32).samples)
    shapes = [decode_image(s["image.jpg"]).shape for s in samples[:2]]
    assert shapes == [(32, 48, 3), (53, 32, 3)]  # 40x60 -> 32x48; 50x30 -> 53x32 (torchvision's rounding)


def test_imagenet_reads_both_saliency_names_and_resamples_the_density(tmp_path):
    sal_root = write_imagenet(tmp_path / "in1k")
    split = imagenet.read_split(tmp_path / "in1k", "train", saliency_root=sal_root, image_size=32)
    samples = list(split.samples)  # n01 has "-sal.npy" maps, n02/n03 "_sal.npy"
    assert split.dataset_info["saliency"] is True
    for sample in samples:
        image = decode_image(sample["image.jpg"])
        stored = decode_image(sample["saliency.png"])  # 16-bit, a quarter of the image's side
        assert stored.dtype == np.uint16 and stored.shape == tuple(-(-s // 4) for s in image.shape[:2])
        density = GlimpseComposer().decode(sample)["saliency"].astype(np.float64)  # back at the image's size
        assert density.shape == image.shape[:2] and density.sum() == pytest.approx(1.0, abs=2e-3)
        red = (image[..., 0] > 200) & (image[..., 1] < 80)
        rows, cols = np.indices(density.shape)
        heavy = density > density.max() / 2  # the map's plateau, resampled with the image
        assert abs(rows[heavy].mean() - rows[red].mean()) < 1 and abs(cols[heavy].mean() - cols[red].mean()) < 1


def test_imagenet_missing_saliency_map_is_a_data_error(tmp_path):
    sal_root = write_imagenet(tmp_path / "in1k")
    (sal_root / "train" / "n03" / "n03_1_sal.npy").unlink()
    with pytest.raises(DataError, match=r"1 of 6 images have no saliency map.*n03_1_sal\.npy"):
        imagenet.read_split(tmp_path / "in1k", "train", saliency_root=sal_root)


def test_imagenet_saliency_of_another_size_is_a_data_error(tmp_path):
    sal_root = write_imagenet(tmp_path / "in1k")
    np.save(sal_root / "val" / "n02" / "n02_0_sal.npy", np.ones((20, 20), np.float32))
    samples = imagenet.read_split(tmp_path / "in1k", "val", saliency_root=sal_root).samples
    with pytest.raises(DataError, match=r"n02_0_sal\.npy.*\(20, 20\).*n02_0\.JPEG is \(40, 60\)"):
        list(samples)


def test_imagenet_missing_folders_and_mismatched_classes_are_data_errors(tmp_path):
    write_imagenet(tmp_path / "in1k", splits=("train",))
    with pytest.raises(DataError, match="val does not exist"):
        imagenet.read_split(tmp_path / "in1k", "val")
    with pytest.raises(DataError, match="nosal/train does not exist"):
        imagenet.read_split(tmp_path / "in1k", "train", saliency_root=tmp_path / "nosal")
    (tmp_path / "in1k" / "val" / "n01").mkdir(parents=True)
    with pytest.raises(DataError, match="class folders of .* differ"):
        imagenet.read_split(tmp_path / "in1k", "val")


# ---------------------------------------------------------------- glimpses, load time

def record(image: np.ndarray, saliency: np.ndarray | None = None, label: int = 0) -> dict:
    return {"image": image, "saliency": None if saliency is None else saliency.astype(np.float32), "label": label}


def one_hot(row: int, col: int, shape=(S, S)) -> np.ndarray:
    density = np.zeros(shape, dtype=np.float32)
    density[row, col] = 1.0
    return density


def compose(composer, records, num_views=5, seed=0):
    return composer.compose(records, num_views, torch.Generator().manual_seed(seed))


def test_first_fixation_lands_in_the_salient_region(tmp_path):
    density = np.full((S, S), 1e-9, dtype=np.float32)
    density[60:63, 10:13] = 1.0
    batch = compose(GlimpseComposer(), [record(stl10_images(1)[0], density)] * 16, num_views=3)
    first = batch["actions"][:, 0] * S
    assert ((first[:, 0] >= 60) & (first[:, 0] < 63) & (first[:, 1] >= 10) & (first[:, 1] < 13)).all()


def test_inhibition_of_return_keeps_later_fixations_out_of_earlier_squares():
    density = np.ones((S, S), dtype=np.float32)
    density[30:60, 30:60] = 100.0  # a strong pull back to the same area
    batch = compose(GlimpseComposer(), [record(stl10_images(1)[0], density)] * 32, num_views=5)
    pos = (batch["actions"] * S).round().long()  # (B, N, 2)
    for i in range(5):
        for j in range(i + 1, 5):
            apart = (pos[:, j] - pos[:, i]).abs().amax(dim=1)
            assert (apart > 16).all()  # outside the inclusive 33 x 33 square around fixation i


def test_without_inhibition_of_return_fixations_may_repeat():
    batch = compose(GlimpseComposer(inhibition_of_return=False), [record(stl10_images(1)[0], one_hot(5, 9))])
    assert torch.equal(batch["actions"][0], torch.tensor([[5 / S, 9 / S]] * 5))


def test_without_saliency_fixations_are_uniform():
    batch = compose(GlimpseComposer(use_saliency=False), [record(stl10_images(1)[0], one_hot(5, 9))] * 8)
    pos = (batch["actions"] * S).round().long().view(-1, 2)
    assert len({tuple(p) for p in pos.tolist()}) > 30  # the map is ignored


def marker_image() -> np.ndarray:
    """Black, red at (20, 60), green at its transpose (60, 20)."""
    image = np.zeros((S, S, 3), dtype=np.uint8)
    image[20, 60] = (255, 0, 0)
    image[60, 20] = (0, 255, 0)
    return image


@pytest.mark.parametrize("legacy, channel", [(False, 0), (True, 1)])
def test_fovea_is_centred_at_the_fixation_or_its_transpose_in_legacy_mode(legacy, channel):
    composer = GlimpseComposer(fovea_size=32, inhibition_of_return=False, legacy_transpose=legacy)
    batch = compose(composer, [record(marker_image(), one_hot(20, 60))], num_views=2)
    patch = batch["views"][0, 0].int()  # (3, F, F)
    assert patch[channel, 16, 16] > 240  # the fovea centre holds red (fixed) or green (legacy)
    assert patch[channel].argmax() == 16 * 32 + 16
    assert patch[1 - channel].max() < 10
    assert torch.equal(batch["actions"][0, 0], torch.tensor([20 / S, 60 / S]))  # both report (row, col)


@pytest.mark.parametrize("legacy", [False, True])
def test_fovea_is_upright(legacy):
    rows, cols = np.meshgrid(np.arange(S), np.arange(S), indexing="ij")
    image = np.stack([rows * 2, cols * 2, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    batch = compose(GlimpseComposer(fovea_size=8, legacy_transpose=legacy), [record(image, one_hot(40, 50))], 2)
    patch = batch["views"][0, 0].int()
    assert (patch[0].diff(dim=0) > 0).all() and (patch[0].diff(dim=1) == 0).all()  # red grows downwards
    assert (patch[1].diff(dim=1) > 0).all() and (patch[1].diff(dim=0) == 0).all()  # green grows rightwards


def test_actions_are_fixations_over_the_size_and_rel_actions_their_differences():
    spots = [(10, 10), (10, 80), (80, 10), (80, 80), (45, 45)]
    density = np.full((S, S), 1e-12, dtype=np.float32)
    for r, c in spots:
        density[r, c] = 1.0
    batch = compose(GlimpseComposer(), [record(stl10_images(1)[0], density, label=7)] * 4, num_views=5)
    assert batch["actions"].shape == (4, 5, 2) and batch["actions"].dtype == torch.float32
    for row in batch["actions"]:
        assert sorted(map(tuple, (row * S).round().long().tolist())) == sorted(spots)
    assert torch.allclose(batch["rel_actions"], batch["actions"][:, 1:] - batch["actions"][:, :-1])
    assert batch["views"].shape == (4, 5, 3, 32, 32) and batch["views"].dtype == torch.uint8
    assert batch["label"].tolist() == [7] * 4 and batch["label"].dtype == torch.int64


def test_border_fixations_are_zero_padded():
    white = np.full((S, S, 3), 255, dtype=np.uint8)
    batch = compose(GlimpseComposer(inhibition_of_return=False), [record(white, one_hot(0, 0))], num_views=2)
    patch = batch["views"][0, 0]
    assert (patch[:, :15, :15] == 0).all()  # above and left of the image
    assert (patch[:, 17:, 17:] == 255).all()  # inside it
    grey = GlimpseComposer(inhibition_of_return=False, fill=(0.5, 0.5, 0.5))
    assert (compose(grey, [record(white, one_hot(0, 0))], 2)["views"][0, 0, :, :15, :15] == 128).all()


def test_crop_takes_the_same_box_from_image_and_saliency():
    image = np.zeros((96, 128, 3), dtype=np.uint8)
    image[40:56, 56:72] = (255, 0, 0)  # a red block; the map's mass sits on its middle
    density = np.full((96, 128), 1e-12, dtype=np.float32)
    density[46:50, 62:66] = 1.0
    composer = GlimpseComposer(fovea_size=3, crop=48, crop_scale=(0.9, 1.0), inhibition_of_return=False)
    for seed in range(6):
        batch = compose(composer, [record(image, density)] * 4, num_views=2, seed=seed)
        assert batch["views"].shape == (4, 2, 3, 3, 3)
        centre = batch["views"][:, :, :, 1, 1].int()  # (B, N, 3)
        assert (centre[..., 0] > 150).all() and (centre[..., 1] < 40).all()  # the fixated pixel is red
        assert ((batch["actions"] * 48) % 1 == 0).all() and (batch["actions"] < 1).all()


def test_without_crop_a_wide_image_gives_its_centre_square():
    image = np.zeros((96, 128, 3), dtype=np.uint8)
    image[20, 16 + 60] = (255, 0, 0)  # (20, 60) in the centre square
    density = np.zeros((96, 128), dtype=np.float32)
    density[20, 16 + 60] = 1.0
    batch = compose(GlimpseComposer(inhibition_of_return=False), [record(image, density)], num_views=2)
    assert torch.equal(batch["actions"][0, 0], torch.tensor([20 / 96, 60 / 96]))
    assert batch["views"][0, 0, 0, 16, 16] > 240


def test_the_same_seed_gives_the_same_batch():
    records = [record(stl10_images(1, seed=i)[0], np.ones((S, S)), label=i) for i in range(4)]
    composer = GlimpseComposer(crop=64)
    a, b, c = compose(composer, records, seed=3), compose(composer, records, seed=3), compose(composer, records, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["actions"], c["actions"])


def test_stl10_shard_samples_decode_and_compose(tmp_path):
    images = write_stl10(tmp_path / "stl10_binary")
    write_stl10_saliency(tmp_path / "sal", "unlabeled", 5, peak=(40, 50))
    split = stl10.read_split(tmp_path / "stl10_binary", "unlabeled", saliency_root=tmp_path / "sal")
    composer = GlimpseComposer()
    records = [composer.decode(s) for s in split.samples]
    assert np.array_equal(records[0]["image"], images["unlabeled"][0]) and records[0]["label"] == -1
    assert records[0]["saliency"].dtype == np.float32 and records[0]["saliency"].shape == (96, 96)
    batch = compose(composer, records, num_views=4)
    assert batch["views"].shape == (5, 4, 3, 32, 32) and batch["label"].tolist() == [-1] * 5
    assert composer.action_dim == 2 and composer.action_groups == {"position": [0, 1]}


def test_decode_raises_on_a_bad_sample():
    composer = GlimpseComposer()
    raw = {"image.npy": encode_npy(stl10_images(1)[0]), "label.cls": encode_label(3),
           "saliency.npy": encode_npy(np.ones((96, 96), np.float16))}
    good = {**{k: v for k, v in raw.items() if k != "image.npy"}, "image.png": encode_png(stl10_images(1)[0])}
    assert composer.decode(raw)["label"] == 3  # the writer's raw layout, and a PNG from the earlier writer
    assert np.array_equal(composer.decode(raw)["image"], composer.decode(good)["image"])
    with pytest.raises(ValueError, match="expected uint8"):
        composer.decode({**raw, "image.npy": encode_npy(np.ones((96, 96), np.float32))})
    for field in ("image.png", "label.cls"):
        with pytest.raises(ValueError, match="no .*field"):
            composer.decode({k: v for k, v in good.items() if k != field})
    with pytest.raises(ValueError, match="does not match the image"):
        composer.decode({**good, "saliency.npy": encode_npy(np.ones((32, 32), np.float16))})
    with pytest.raises(ValueError):
        composer.decode({**good, "label.cls": b"x"})
    with pytest.raises(ValueError, match="unreadable"):
        composer.decode({**good, "image.png": good["image.png"][:40]})


def test_composer_refuses_bad_settings():
    with pytest.raises(DataError, match="fovea_size"):
        GlimpseComposer(fovea_size=0)
    with pytest.raises(DataError, match="num_views"):
        compose(GlimpseComposer(), [record(stl10_images(1)[0])], num_views=1)


def test_fixations_follow_the_map_distribution():
    from data_pipeline.sources.glimpses import draw_positions

    weights = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 5.0]]]).repeat(40000, 1, 1)
    rows, cols = draw_positions(weights, torch.Generator().manual_seed(0))
    counts = torch.bincount(rows * 3 + cols, minlength=9).double() / len(rows)
    assert counts[[0, 2, 3, 4, 5, 7]].sum() == 0  # zero weight is never drawn
    assert torch.allclose(counts[[1, 6, 8]], torch.tensor([1 / 8, 2 / 8, 5 / 8], dtype=torch.float64), atol=0.01)


def test_a_map_with_no_mass_in_the_image_square_falls_back_to_uniform():
    density = np.zeros((96, 128), dtype=np.float32)
    density[50, 2] = 1.0  # outside the centre square
    batch = compose(GlimpseComposer(), [record(np.zeros((96, 128, 3), np.uint8), density)], num_views=3)
    assert torch.isfinite(batch["actions"]).all() and ((batch["actions"] >= 0) & (batch["actions"] < 1)).all()


def test_density_png_keeps_relative_values_and_resizes_to_the_image():
    density = np.random.default_rng(0).random((6, 8)) ** 4  # a peaky map with small values
    restored = decode_density_png(encode_density_png(density), (6, 8))
    np.testing.assert_allclose(restored, density / density.sum(), atol=density.max() / 65535 / density.sum())
    assert decode_density_png(encode_density_png(density), (12, 16)).shape == (12, 16)
    with pytest.raises(ValueError, match="non-negative"):
        encode_density_png(-density)


def original_inhibition_of_return(maps, num, size, fovea_size, generator):
    """The original's steps (docs/paper-and-original-code.md#stl-10-pls): normalise; per fixation draw, zero the
    square around it, add the floor everywhere, renormalise."""
    current = maps.clone()
    current /= current.sum(dim=(1, 2), keepdim=True)
    axis, radius, rows, cols = torch.arange(size), fovea_size // 2, [], []
    for _ in range(num):
        row, col = draw_positions(current, generator)
        rows.append(row)
        cols.append(col)
        near = (((axis.view(1, -1) - row.view(-1, 1)).abs() <= radius).unsqueeze(2)
                & ((axis.view(1, -1) - col.view(-1, 1)).abs() <= radius).unsqueeze(1))
        current = current.masked_fill(near, 0.0) + IOR_FLOOR
        current /= current.sum(dim=(1, 2), keepdim=True)
    return torch.stack(rows, dim=1), torch.stack(cols, dim=1)


def test_inhibition_of_return_draws_the_fixations_of_the_original_steps():
    same = total = 0
    for seed in range(6):
        maps = torch.rand(64, 96, 96, generator=torch.Generator().manual_seed(seed)) ** 4
        maps[:, 30:70, 30:70] *= seed % 2  # zero regions: there only the floor is left to draw from
        ours = sample_fixations(maps, 5, 96, 32, True, torch.Generator().manual_seed(seed))
        reference = original_inhibition_of_return(maps, 5, 96, 32, torch.Generator().manual_seed(seed))
        equal = (ours[0] == reference[0]) & (ours[1] == reference[1])
        same, total = same + int(equal.sum()), total + equal.numel()
    assert same == total, f"{total - same} of {total} fixations differ"
