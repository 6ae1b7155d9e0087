"""3DIEBench source: reading SIE's on-disk layout into shard samples, decoding them back, composing
sequences of distinct views, and the rotation/colour actions between views
(docs/paper-and-original-code.md#3diebench-actions, #3diebench-dataset, #3diebench-ood)."""

import math
import pickle
import re

import numpy as np
import pytest
import torch

from data_pipeline.errors import DataError
from data_pipeline.sources import rotations as rot
from data_pipeline.sources import threedie
from data_pipeline.sources.base import DATASET_INFO_KEYS, decode_image, decode_npy, encode_label, encode_npy
from tests.helpers.raw_datasets import SYNSETS, random_latents, view_colour, write_object
from tests.helpers.raw_datasets import THREEDIE_SIDE as SIDE
from tests.helpers.rotation_reference import euler_xyz_to_matrix, quaternion_inverse, quaternion_to_matrix

OBJECTS_PER_SYNSET = 3
VIEWS = 6


def object_path(i: int) -> str:
    return f"/{SYNSETS[i // OBJECTS_PER_SYNSET]}/obj{i:02d}abcdef/"


@pytest.fixture
def dataset(tmp_path):
    """A tiny 3DIEBench in the real layout: 2 synsets x 3 objects x 6 views of 20x20 JPEG, index files
    (objects 0, 1, 3, 4 train; 2, 5 val); `latents[i][k]` is object i's view k."""
    root, rng = tmp_path / "3DIEBench", np.random.default_rng(0)
    latents = {}
    for i in range(2 * OBJECTS_PER_SYNSET):
        latents[i] = write_object(root / object_path(i).strip("/"), i, range(VIEWS), rng)
    for split, objects in (("train", [0, 1, 3, 4]), ("val", [2, 5])):
        np.save(root / f"{split}_images.npy", np.array([object_path(i) for i in objects]))
        np.save(root / f"{split}_labels.npy", np.array([i // OBJECTS_PER_SYNSET for i in objects], np.int64))
    return root, latents


def object_index(sample) -> int:
    return int(sample["object.txt"].decode()[-8:-6])


def records(root, split="train", image_size=SIDE, composer=None, **kw):
    composer = composer or threedie.ThreeDIEComposer()
    source = threedie.read_split(root, split, image_size=image_size, **kw)
    samples = list(source.samples)
    return [composer.decode(s) for s in samples], [object_index(s) for s in samples]


# ---------------------------------------------------------------- write time

def test_read_split_writes_one_sample_per_object_with_every_view(dataset):
    root, latents = dataset
    source = threedie.read_split(root, "train", image_size=SIDE)
    assert source.num_samples == 4
    samples = list(source.samples)
    assert len(samples) == 4
    for sample in samples:
        i = object_index(sample)
        assert sorted(sample) == ["label.cls", "latents.npy", "object.txt", "views.bin", "views.npy"]
        assert sorted(threedie.unpack_views(sample)) == list(range(VIEWS))
        assert sample["object.txt"].decode() == object_path(i).strip("/")
        assert int(sample["label.cls"]) == i // OBJECTS_PER_SYNSET
        stored = decode_npy(sample["latents.npy"])
        assert stored.dtype == np.float32 and stored.shape == (VIEWS, 7)
        np.testing.assert_allclose(stored, np.stack([latents[i][k] for k in range(VIEWS)]), rtol=1e-6)
    assert set(source.fields) >= {"views.bin", "views.npy", "latents.npy", "label.cls"}


def test_dataset_info_describes_the_split(dataset):
    info = threedie.read_split(dataset[0], "val", image_size=64).dataset_info
    assert set(DATASET_INFO_KEYS) <= set(info)
    assert info["num_classes"] == 55 and len(info["class_names"]) == 55
    assert info["class_names"][:2] == list(SYNSETS)
    assert (info["channels"], info["height"], info["width"]) == (3, 64, 64)
    assert info["mean"] == [0.5016, 0.5037, 0.5060] and info["std"] == [0.1030, 0.0999, 0.0969]
    assert info["views_per_object"] == VIEWS and info["missing_objects"] == 0


@pytest.mark.parametrize("image_size", [16, 32])
def test_views_are_resized_to_image_size(dataset, image_size):
    sample = next(threedie.read_split(dataset[0], "train", image_size=image_size).samples)
    i = object_index(sample)
    views = threedie.unpack_views(sample)
    for k in range(VIEWS):
        image = decode_image(views[k], "RGB")
        assert image.shape == (image_size, image_size, 3)
        np.testing.assert_allclose(image.reshape(-1, 3).mean(0), view_colour(i, k), atol=4)


def test_index_dir_may_differ_from_root(dataset, tmp_path):
    root, _ = dataset
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    for name in ("train_images.npy", "train_labels.npy"):
        (root / name).rename(index_dir / name)
    with pytest.raises(DataError, match="train_images.npy"):
        threedie.read_split(root, "train")
    assert threedie.read_split(root, "train", index_dir=index_dir).num_samples == 4


# ---------------------------------------------------------------- load time: contract

@pytest.mark.parametrize("num_views", [2, 3, 4, 5])  # M = 1..4 observed views + the target
@pytest.mark.parametrize("latent_type,width", [("rot", 4), ("rotcolor", 6), ("color", 2), ("all", 8)])
def test_compose_follows_the_batch_contract(dataset, num_views, latent_type, width):
    composer = threedie.ThreeDIEComposer(latent_type=latent_type)
    recs, _ = records(dataset[0], image_size=16, composer=composer)
    batch = composer.compose(recs, num_views, torch.Generator().manual_seed(0))
    assert composer.action_dim == width
    assert batch["views"].dtype == torch.uint8 and batch["views"].shape == (4, num_views, 3, 16, 16)
    assert batch["actions"].dtype == torch.float32 and batch["actions"].shape == (4, num_views, width)
    assert batch["rel_actions"].dtype == torch.float32 and batch["rel_actions"].shape == (4, num_views - 1, width)
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [0, 0, 1, 1]


def test_drawn_views_are_distinct_and_belong_with_their_latents(dataset):
    root, latents = dataset
    composer = threedie.ThreeDIEComposer(latent_type="color")  # actions = [floor_hue, spot_hue] as stored
    recs, objects = records(root, composer=composer)
    for seed in range(5):
        batch = composer.compose(recs, 5, torch.Generator().manual_seed(seed))
        for b, i in enumerate(objects):
            colours = batch["views"][b].float().mean(dim=(2, 3))  # (V, 3) mean RGB per drawn view
            drawn = [int(round((c[0].item() - 30) / 40)) for c in colours]  # the red channel names the view
            assert len(set(drawn)) == 5
            for v, k in enumerate(drawn):
                np.testing.assert_allclose(colours[v].numpy(), view_colour(i, k), atol=4)
                np.testing.assert_allclose(batch["actions"][b, v].numpy(), latents[i][k][[3, 6]], rtol=1e-6)


def test_view_draws_cover_all_views_in_random_order(dataset):
    composer = threedie.ThreeDIEComposer(latent_type="color")
    recs, _ = records(dataset[0], composer=composer)
    generator = torch.Generator().manual_seed(0)
    firsts, orders = set(), set()
    for _ in range(30):
        colours = composer.compose(recs[:1], 3, generator)["views"][0].float().mean(dim=(2, 3))[:, 0]
        order = tuple(int(round((c.item() - 30) / 40)) for c in colours)
        firsts.add(order[0])
        orders.add(order)
    assert firsts == set(range(VIEWS)) and any(o != tuple(sorted(o)) for o in orders)


def test_same_generator_seed_gives_the_same_batch(dataset):
    composer = threedie.ThreeDIEComposer(latent_type="all")
    recs, _ = records(dataset[0])
    a, b, c = (composer.compose(recs, 4, torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["actions"], c["actions"])


def test_asking_for_more_views_than_an_object_has_raises(dataset):
    recs, _ = records(dataset[0])
    with pytest.raises(ValueError, match="has 6 views.*num_views=7"):
        threedie.ThreeDIEComposer().compose(recs, 7, torch.Generator().manual_seed(0))


def test_composer_pickles_and_rejects_unknown_latent_type():
    composer = threedie.ThreeDIEComposer(latent_type="rotcolor", canonical_quaternions=False)
    assert pickle.loads(pickle.dumps(composer)) == composer
    with pytest.raises(DataError, match="latent_type 'quat'"):
        threedie.ThreeDIEComposer(latent_type="quat")


@pytest.mark.parametrize("latent_type", threedie.LATENT_TYPES)
def test_action_groups_partition_the_action_dims(latent_type):
    composer = threedie.ThreeDIEComposer(latent_type=latent_type)
    dims = sorted(d for group in composer.action_groups.values() for d in group)
    assert dims == list(range(composer.action_dim))
    assert ("rotation" in composer.action_groups) == (latent_type != "color")


# ---------------------------------------------------------------- rotation conventions

def elemental(axis: int, angle: float) -> np.ndarray:
    """The textbook active rotation matrix about one coordinate axis."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def test_quarter_turn_about_x_is_sin45_0_0_cos45():
    q = rot.euler_xyz_to_quaternion(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))
    h = math.sqrt(0.5)
    torch.testing.assert_close(q, torch.tensor([h, 0, 0, h], dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_matrix(q),
                               torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64))


def test_euler_xyz_is_extrinsic_x_then_y_then_z():
    angles = np.random.default_rng(1).uniform(-np.pi, np.pi, (20, 3))
    expected = np.stack([elemental(2, c) @ elemental(1, b) @ elemental(0, a) for a, b, c in angles])
    np.testing.assert_allclose(euler_xyz_to_matrix(torch.from_numpy(angles)).numpy(), expected, atol=1e-12)


def test_quaternion_and_euler_give_the_same_matrices():
    angles = torch.from_numpy(np.random.default_rng(2).uniform(-np.pi, np.pi, (500, 3)))
    q = rot.euler_xyz_to_quaternion(angles)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(500, dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_matrix(q), euler_xyz_to_matrix(angles))
    torch.testing.assert_close(quaternion_to_matrix(-q), euler_xyz_to_matrix(angles))


def test_quaternion_product_composes_like_matrices_and_inverse_undoes():
    angles = torch.from_numpy(np.random.default_rng(3).uniform(-np.pi, np.pi, (2, 100, 3)))
    p, q = rot.euler_xyz_to_quaternion(angles)
    torch.testing.assert_close(quaternion_to_matrix(rot.quaternion_multiply(p, q)),
                               quaternion_to_matrix(p) @ quaternion_to_matrix(q))
    identity = torch.tensor([0.0, 0, 0, 1], dtype=torch.float64).expand(100, 4)
    torch.testing.assert_close(rot.quaternion_multiply(p, quaternion_inverse(2 * p)) * 2, identity)
    torch.testing.assert_close(rot.quaternion_multiply(rot.quaternion_conjugate(p), p), identity)


@pytest.mark.parametrize("canonical", [True, False])
@pytest.mark.parametrize("ood", [False, True])
def test_relative_rotation_takes_each_view_to_the_next(canonical, ood):
    """R_j @ R(q_rel_j) == R_{j+1}, and the absolute quaternions are the views' rotations."""
    latents = torch.from_numpy(random_latents(np.random.default_rng(4), 300 * 5, ood).reshape(300, 5, 7))
    actions, rel = threedie.latent_actions(latents, "rot", canonical)
    views = euler_xyz_to_matrix(latents[..., :3])
    torch.testing.assert_close(quaternion_to_matrix(actions), views)
    torch.testing.assert_close(views[:, :-1] @ quaternion_to_matrix(rel), views[:, 1:])


def test_composed_batch_relative_rotations_chain_the_drawn_views(dataset):
    composer = threedie.ThreeDIEComposer(latent_type="all")
    recs, _ = records(dataset[0])
    batch = composer.compose(recs, 5, torch.Generator().manual_seed(3))
    absolute = quaternion_to_matrix(batch["actions"][..., :4].double())
    relative = quaternion_to_matrix(batch["rel_actions"][..., :4].double())
    torch.testing.assert_close(absolute[:, :-1] @ relative, absolute[:, 1:], atol=1e-5, rtol=0)


def test_canonical_quaternions_have_nonnegative_w_and_legacy_keeps_the_raw_sign():
    latents = torch.from_numpy(random_latents(np.random.default_rng(5), 20000, ood=False).reshape(10000, 2, 7))
    fixed, fixed_rel = threedie.latent_actions(latents, "rot", canonical_quaternions=True)
    raw, raw_rel = threedie.latent_actions(latents, "rot", canonical_quaternions=False)
    assert (fixed[..., 3] >= 0).all() and (fixed_rel[..., 3] >= 0).all()
    assert (raw[..., 3] >= 0).all()  # in-distribution angles: absolute w is never negative
    # (docs/paper-and-original-code.md#3diebench-actions)
    negative = (raw_rel[..., 3] < 0).double().mean().item()
    assert 0.02 < negative < 0.07  # the original's ~4 % of relative quaternions with w < 0
    torch.testing.assert_close(raw_rel * torch.sign(raw_rel[..., 3:]), fixed_rel)  # same rotations, sign aside
    torch.testing.assert_close(quaternion_to_matrix(raw_rel), quaternion_to_matrix(fixed_rel))


def test_legacy_absolute_quaternions_are_scipys_elemental_product_out_of_distribution():
    latents = torch.from_numpy(random_latents(np.random.default_rng(6), 2000, ood=True).reshape(1000, 2, 7))
    raw, _ = threedie.latent_actions(latents, "rot", canonical_quaternions=False)
    fixed, _ = threedie.latent_actions(latents, "rot", canonical_quaternions=True)
    assert (raw[..., 3] < 0).any() and (fixed[..., 3] >= 0).all()
    a, b, c = latents[..., :3].unbind(-1)
    product = rot.quaternion_multiply(rot.axis_angle_quaternion(2, c), rot.quaternion_multiply(
        rot.axis_angle_quaternion(1, b), rot.axis_angle_quaternion(0, a)))
    torch.testing.assert_close(raw, product)


# ---------------------------------------------------------------- latent types

@pytest.mark.parametrize("latent_type,columns", [("rotcolor", [3, 6]), ("color", [3, 6]), ("all", [3, 4, 5, 6])])
def test_latent_types_carry_the_listed_latents_and_their_differences(latent_type, columns):
    latents = torch.from_numpy(random_latents(np.random.default_rng(7), 40, ood=False).reshape(10, 4, 7))
    actions, rel = threedie.latent_actions(latents, latent_type)
    quaternion, rel_quaternion = threedie.latent_actions(latents, "rot")
    start = 0 if latent_type == "color" else 4
    assert actions.shape[-1] == start + len(columns)
    torch.testing.assert_close(actions[..., start:], latents[..., columns])
    torch.testing.assert_close(rel[..., start:], latents[:, 1:, columns] - latents[:, :-1, columns])
    if start:
        torch.testing.assert_close(actions[..., :4], quaternion)
        torch.testing.assert_close(rel[..., :4], rel_quaternion)


# ---------------------------------------------------------------- 3DIEBench-OOD

def test_ood_reads_only_the_rendered_views_and_skips_missing_objects(dataset, tmp_path):
    root, _ = dataset
    ood_root, rng = tmp_path / "3DIEBench-OOD", np.random.default_rng(8)
    # Of the two val objects (2 and 5), only object 5 was rendered, views 2..5.
    ood_latents = write_object(ood_root / object_path(5).strip("/"), 5, range(2, 6), rng, ood=True)
    source = threedie.read_split(ood_root, "ood", index_dir=root, image_size=SIDE)
    assert source.num_samples == 1
    assert source.dataset_info["missing_objects"] == 1 and source.dataset_info["views_per_object"] == 4
    (sample,) = list(source.samples)
    assert sorted(threedie.unpack_views(sample)) == [2, 3, 4, 5]
    np.testing.assert_allclose(decode_npy(sample["latents.npy"]), np.stack([ood_latents[k] for k in range(2, 6)]),
                               rtol=1e-6)
    composer = threedie.ThreeDIEComposer(latent_type="color")
    record = composer.decode(sample)
    assert record.view_ids == (2, 3, 4, 5)
    batch = composer.compose([record], 4, torch.Generator().manual_seed(0))
    drawn = sorted(int(round((c - 30) / 40)) for c in batch["views"][0].float().mean(dim=(2, 3))[:, 0].tolist())
    assert drawn == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="has 4 views"):
        composer.compose([record], 5, torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- errors

def test_missing_root_or_index_file_names_the_path(dataset, tmp_path):
    root, _ = dataset
    with pytest.raises(DataError, match="nowhere"):
        threedie.read_split(tmp_path / "nowhere", "train")
    (root / "val_labels.npy").unlink()
    with pytest.raises(DataError, match=r"val_labels\.npy does not exist.*source-dir"):
        threedie.read_split(root, "val")
    with pytest.raises(DataError, match="unknown 3DIEBench split 'test'"):
        threedie.read_split(root, "test")


def test_missing_object_folder_or_views_names_the_folder(dataset):
    root, _ = dataset
    folder = root / object_path(1).strip("/")
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(DataError, match=re.escape(f"{folder} holds no image")):
        threedie.read_split(root, "train")
    folder.rmdir()
    with pytest.raises(DataError, match=re.escape(f"{folder} (listed in the index) does not exist")):
        threedie.read_split(root, "train")


def test_view_without_latents_or_with_a_broken_image_fails_while_writing(dataset):
    root, _ = dataset
    folder = root / object_path(0).strip("/")
    (folder / "latent_3.npy").unlink()
    with pytest.raises(DataError, match="image_3.jpg has no latent_3.npy"):
        list(threedie.read_split(root, "train").samples)
    np.save(folder / "latent_3.npy", np.zeros(7))
    (folder / "image_4.jpg").write_bytes((folder / "image_4.jpg").read_bytes()[:100])
    with pytest.raises(DataError, match="image_4.jpg"):
        list(threedie.read_split(root, "train").samples)


@pytest.fixture
def good_sample(dataset):
    return next(threedie.read_split(dataset[0], "train", image_size=SIDE).samples)


@pytest.mark.parametrize("field", ["latents.npy", "label.cls", "views.bin", "views.npy"])
def test_decode_rejects_a_sample_missing_a_field(good_sample, field):
    del good_sample[field]
    composer = threedie.ThreeDIEComposer()
    with pytest.raises(ValueError, match=f"lacks field {field}"):
        composer.decode(good_sample)


def test_decode_rejects_views_whose_index_disagrees_with_the_bytes(good_sample):
    composer = threedie.ThreeDIEComposer()
    with pytest.raises(ValueError, match="views.bin has"):
        composer.decode({**good_sample, "views.bin": good_sample["views.bin"][:-10]})  # a truncated blob
    with pytest.raises(ValueError, match="views.npy"):
        composer.decode({**good_sample, "views.npy": encode_npy(np.zeros((VIEWS, 3), np.int64))})


@pytest.mark.parametrize("broken", [
    lambda s: s["latents.npy"][:-9],  # truncated file
    lambda s: b"not numpy",
    lambda s: encode_npy(decode_npy(s["latents.npy"])[:-1]),  # one view short
    lambda s: encode_npy(decode_npy(s["latents.npy"])[:, :6]),  # 6 latents instead of 7
    lambda s: encode_npy(np.full((VIEWS, 7), np.nan, np.float32)),
])
def test_decode_rejects_broken_latents(good_sample, broken):
    good_sample["latents.npy"] = broken(good_sample)
    with pytest.raises(ValueError, match="latents.npy"):
        threedie.ThreeDIEComposer().decode(good_sample)


def test_decode_rejects_bad_label_and_non_jpeg_views(good_sample):
    composer = threedie.ThreeDIEComposer()
    record = composer.decode({**good_sample, "__key__": "000001", "__url__": "shard-0.tar"})  # webdataset extras
    assert record.view_ids == tuple(range(VIEWS)) and record.latents.shape == (VIEWS, 7)
    with pytest.raises(ValueError, match="label 55 outside"):
        composer.decode({**good_sample, "label.cls": encode_label(55)})
    views = threedie.unpack_views(good_sample)
    with pytest.raises(ValueError, match="JPEG"):
        composer.decode({**good_sample, **threedie.pack_views({**views, 2: b"\x89PNG...."})})
