"""`audit`: unreadable files, duplicates within and across splits, imbalance, odd modes."""

import json
import os
import shutil

import numpy as np
import pytest
from image_cases import BAD, make_odd_folder, pattern
from PIL import Image

from tltf.data import load_arrays, load_image_folder
from tltf.data.auditing import AuditReport, audit


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    root = make_odd_folder(tmp_path_factory.mktemp("odd"))
    shutil.copy(root / "cats/baseline.jpg", root / "dogs/copy of cat.jpg")  # conflicting label
    Image.fromarray(pattern(1)[:8, :8]).save(root / "dogs/tiny.png")
    return root


def test_audit_folder(odd, tmp_path):
    report = audit(odd, min_size=16, cache_dir=tmp_path)
    assert isinstance(report, AuditReport) and not report.ok
    assert sorted(os.path.relpath(p, odd) for p, _ in report.unreadable) == sorted(BAD)
    assert all(reason for _, reason in report.unreadable)
    assert report.duplicates == [
        [str(odd / "cats/baseline.jpg"), str(odd / "dogs/copy of cat.jpg")]
    ]
    assert report.conflicting_labels == report.duplicates and report.cross_split_duplicates == []
    assert report.tiny_images == [(str(odd / "dogs/tiny.png"), (8, 8))]
    assert report.cmyk == [str(odd / "cats/cmyk.jpeg")]
    assert report.alpha == [str(odd / "cats/rgba.png")]
    assert len(report.grayscale) == 3  # gray JPEG, gray PNG, 16-bit PNG
    assert report.exif_rotated == [str(odd / "dogs/rotated.jpg")]
    assert report.extension_mismatch == [str(odd / "dogs/png named as.jpg")]
    counts = report.class_counts["all"]
    assert report.imbalance_ratio == pytest.approx(max(counts.values()) / min(counts.values()))
    json.dumps(report.to_dict())
    text = str(report)
    assert "truncated.jpg" in text and "duplicates with different labels: 1" in text


def test_audit_cross_split_duplicates(tmp_path):
    for split in ("train", "validation"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(pattern(i)).save(tmp_path / "train/a" / f"{i}.png")
        Image.fromarray(pattern(10 + i)).save(tmp_path / "train/b" / f"{i}.png")
    Image.fromarray(pattern(20)).save(tmp_path / "validation/b/x.png")
    shutil.copy(tmp_path / "train/a/0.png", tmp_path / "validation/a/leak.png")
    report = audit(tmp_path, cache_dir=tmp_path / ".c")
    leak = [str(tmp_path / "train/a/0.png"), str(tmp_path / "validation/a/leak.png")]
    assert report.cross_split_duplicates == [leak] and report.conflicting_labels == []
    assert report.class_counts == {"train": {"a": 3, "b": 3}, "validation": {"a": 1, "b": 1}}
    train, val = load_image_folder(tmp_path, image_size=8, cache_dir=tmp_path / ".c")
    from_datasets = audit((train, val), cache_dir=tmp_path / ".c")
    assert from_datasets.cross_split_duplicates == [leak]
    assert set(from_datasets.class_counts) == {"train", "validation"}


def test_audit_in_memory_data():
    x = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    x[4] = x[1]
    report = audit({"train": load_arrays(x[:5], np.array([0, 1, 0, 1, 0]))})
    assert report.duplicates and report.conflicting_labels == [["train/1", "train/4"]]
    assert report.class_counts == {"train": {"0": 3, "1": 2}}
    assert report.imbalance_ratio == pytest.approx(1.5)


def test_audit_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        audit(tmp_path / "missing")
    with pytest.raises(ValueError, match="one subfolder per class"):
        audit(tmp_path)
    with pytest.raises(TypeError, match="Expected `source`"):
        audit(3)
    with pytest.raises(TypeError, match="Expected `source`"):
        audit([1, 2])
