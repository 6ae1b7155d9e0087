"""The shard reader (`data_pipeline/tar_samples.py`) reads what webdataset reads, and refuses damaged tars."""

from __future__ import annotations

import io
import tarfile

import pytest
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from data_pipeline.tar_samples import BrokenTar, tar_samples
from tests.helpers.shards import make_shards


def webdataset_samples(path: str) -> list[dict]:
    with open(path, "rb") as stream:
        return list(group_by_keys(tar_file_expander([{"url": path, "stream": stream}])))


def ours(path: str) -> list[dict]:
    with open(path, "rb") as stream:
        return list(tar_samples(stream, path))


def test_reads_the_project_shards_as_webdataset_does(tmp_path):
    shard = str(make_shards(tmp_path / "s", [7], corrupt={3}) / "shard-000000.tar")
    expected = webdataset_samples(shard)
    assert len(expected) == 7 and ours(shard) == expected


def test_long_names_in_every_tar_format_and_skipped_non_files(tmp_path):
    long_key = "deep/" * 30 + "object_0001"  # 155+ characters: ustar prefix, GNU longname or pax path
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            folder = tarfile.TarInfo("somedir")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
            for key, field, data in [(long_key, "image.PNG", b"x" * 700), (long_key, "label.cls", b"3"),
                                     ("short", "label.cls", b"4")]:
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        samples = ours(str(path))
        assert samples == webdataset_samples(str(path)), fmt
        assert [s["__key__"] for s in samples] == [long_key, "short"]
        assert samples[0]["image.png"] == b"x" * 700  # field names lower-cased, as webdataset does


def write_two_samples(path) -> bytes:
    with wds.TarWriter(str(path), encoder=False) as sink:
        for key in ("a", "b"):
            sink.write({"__key__": key, "image.png": b"p" * 1000, "label.cls": b"1"})
    return path.read_bytes()


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:1500], "truncated"),  # cut inside the first member's data
    (lambda raw: raw[:600], "truncated"),  # cut inside a header
    (lambda raw: raw[:148] + b"0000001\0" + raw[156:], "checksum"),  # a corrupted header
])
def test_a_damaged_tar_is_refused_after_the_samples_before_it(tmp_path, damage, message):
    path = tmp_path / "shard.tar"
    path.write_bytes(damage(write_two_samples(path)))
    with open(path, "rb") as stream, pytest.raises(BrokenTar, match=message):
        list(tar_samples(stream, str(path)))


def test_a_field_twice_in_one_sample_is_a_broken_tar(tmp_path):
    path = tmp_path / "dup.tar"
    with tarfile.open(path, "w") as tar:
        for _ in range(2):
            info = tarfile.TarInfo("k.label.cls")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"1"))
    with open(path, "rb") as stream, pytest.raises(BrokenTar, match="twice"):
        list(tar_samples(stream, str(path)))
