"""Dataset readers against tiny fixtures written in each published layout."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.datasets import ANOMALOUS, NORMAL, DatasetLayoutError, Sample, load_image, load_mask, read_dataset


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (8, 6), mode: str = "RGB") -> Path:
    """A small solid image; (width, height) = size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode != "RGB" else (value, value, value)).save(path)
    return path


def write_mask(path: Path, box: tuple[int, int, int, int], size: tuple[int, int] = (8, 6), on: int = 255) -> Path:
    """A mask with the (top, left, bottom, right) box set to `on`."""
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    top, left, bottom, right = box
    pixels[top:bottom, left:right] = on
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def summary(samples: list[Sample]) -> list[tuple[str, str, str, int, str | None]]:
    return sorted((s.category, s.split, s.image.name, s.label, s.mask.name if s.mask else None) for s in samples)


def test_mvtec_reads_train_test_and_masks(tmp_path: Path) -> None:
    for category in ("bottle", "grid"):
        write_image(tmp_path / category / "train" / "good" / "000.png")
        write_image(tmp_path / category / "test" / "good" / "000.png")
        write_image(tmp_path / category / "test" / "crack" / "001.png")
        write_mask(tmp_path / category / "ground_truth" / "crack" / "001_mask.png", (1, 1, 3, 3))
    samples = read_dataset("mvtec", tmp_path, categories=["grid"])
    assert summary(samples) == [
        ("grid", "test", "000.png", NORMAL, None),
        ("grid", "test", "001.png", ANOMALOUS, "001_mask.png"),
        ("grid", "train", "000.png", NORMAL, None),
    ]
    assert len(read_dataset("mvtec", tmp_path)) == 6


def test_mvtec_missing_mask_and_category_are_named(tmp_path: Path) -> None:
    write_image(tmp_path / "bottle" / "train" / "good" / "000.png")
    write_image(tmp_path / "bottle" / "test" / "broken" / "003.png")
    with pytest.raises(DatasetLayoutError, match=r"ground_truth/broken/003_mask\.png is missing"):
        read_dataset("mvtec", tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"categories \['cable'\] not found"):
        read_dataset("mvtec", tmp_path, categories=["cable"])


def test_visa_follows_split_csv(tmp_path: Path) -> None:
    base = tmp_path / "candle" / "Data"
    write_image(base / "Images" / "Normal" / "0000.JPG")
    write_image(base / "Images" / "Normal" / "0001.JPG")
    write_image(base / "Images" / "Anomaly" / "000.JPG")
    # VisA masks hold small label values, not 255.
    write_mask(base / "Masks" / "Anomaly" / "000.png", (0, 0, 2, 2), on=1)
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\n"
        "candle,train,normal,candle/Data/Images/Normal/0000.JPG,\n"
        "candle,test,normal,candle/Data/Images/Normal/0001.JPG,\n"
        "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\n"
    )
    samples = read_dataset("visa", tmp_path)
    assert summary(samples) == [
        ("candle", "test", "000.JPG", ANOMALOUS, "000.png"),
        ("candle", "test", "0001.JPG", NORMAL, None),
        ("candle", "train", "0000.JPG", NORMAL, None),
    ]
    anomalous = next(s for s in samples if s.label == ANOMALOUS)
    assert int(load_mask(anomalous).sum()) == 4


def test_visa_bad_label_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("object,split,label,image,mask\ncandle,test,broken,a.JPG,\n")
    with pytest.raises(DatasetLayoutError, match="line 2: label 'broken'"):
        read_dataset("visa", tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"1cls\.csv is missing"):
        read_dataset("visa", tmp_path / "nowhere")


def test_elpv_labels_by_defect_probability(tmp_path: Path) -> None:
    for name in ("cell0001.png", "cell0002.png", "cell0003.png"):
        write_image(tmp_path / "images" / name, mode="L")
    (tmp_path / "labels.csv").write_text(
        "images/cell0001.png  1.0  mono\n"
        "images/cell0002.png  0.0  poly\n"
        "images/cell0003.png  0.3333333333333333  mono\n"
    )
    assert summary(read_dataset("elpv", tmp_path)) == [
        ("elpv", "test", "cell0001.png", ANOMALOUS, None),
        ("elpv", "test", "cell0002.png", NORMAL, None),
        ("elpv", "test", "cell0003.png", ANOMALOUS, None),
    ]
    (tmp_path / "labels.csv").write_text("images/cell0009.png  1.0  mono\n")
    with pytest.raises(DatasetLayoutError, match=r"cell0009\.png is missing"):
        read_dataset("elpv", tmp_path)


def test_kolektor_labels_from_label_bitmaps(tmp_path: Path) -> None:
    write_image(tmp_path / "kos01" / "Part0.jpg", mode="L")
    Image.fromarray(np.zeros((6, 8), dtype=np.uint8)).save(tmp_path / "kos01" / "Part0_label.bmp")
    write_image(tmp_path / "kos01" / "Part1.jpg", mode="L")
    write_mask(tmp_path / "kos01" / "Part1_label.bmp", (2, 2, 4, 5))
    samples = read_dataset("sdd", tmp_path)
    assert summary(samples) == [
        ("sdd", "test", "Part0.jpg", NORMAL, None),
        ("sdd", "test", "Part1.jpg", ANOMALOUS, "Part1_label.bmp"),
    ]
    assert int(load_mask(samples[1]).sum()) == 6
    (tmp_path / "kos01" / "Part1_label.bmp").unlink()
    with pytest.raises(DatasetLayoutError, match=r"Part1_label\.bmp is missing"):
        read_dataset("sdd", tmp_path)


def test_aitex_merges_multiple_masks(tmp_path: Path) -> None:
    write_image(tmp_path / "NODefect_images" / "2311694-2040n7u" / "0001_000_05.png", mode="L")
    write_image(tmp_path / "Defect_images" / "0001_002_00.png", mode="L")
    write_image(tmp_path / "Defect_images" / "0044_019_04.png", mode="L")
    write_mask(tmp_path / "Mask_images" / "0001_002_00_mask.png", (0, 0, 1, 1))
    write_mask(tmp_path / "Mask_images" / "0044_019_04_mask1.png", (0, 0, 2, 2))
    write_mask(tmp_path / "Mask_images" / "0044_019_04_mask2.png", (4, 4, 6, 8))
    samples = read_dataset("aitex", tmp_path, cache_dir=tmp_path / "cache")
    assert [(s.image.name, s.label) for s in samples] == [
        ("0001_000_05.png", 0),
        ("0001_002_00.png", 1),
        ("0044_019_04.png", 1),
    ]
    merged = samples[2]
    assert merged.mask is not None and merged.mask.is_relative_to(tmp_path / "cache")
    assert int(load_mask(merged).sum()) == 4 + 8
    (tmp_path / "Mask_images" / "0001_002_00_mask.png").unlink()
    with pytest.raises(DatasetLayoutError, match="0001_002_00.png has no mask"):
        read_dataset("aitex", tmp_path, cache_dir=tmp_path / "cache")


def test_brain_mri_yes_no(tmp_path: Path) -> None:
    write_image(tmp_path / "no" / "1 no.jpeg")
    write_image(tmp_path / "yes" / "Y1.jpg")
    write_image(tmp_path / "yes" / "Y2.JPG")
    samples = read_dataset("brainmri", tmp_path)
    assert sorted((s.image.name, s.label) for s in samples) == [("1 no.jpeg", 0), ("Y1.jpg", 1), ("Y2.JPG", 1)]
    with pytest.raises(DatasetLayoutError, match=r"brainmri: expected folder .*no is missing"):
        read_dataset("brainmri", tmp_path / "yes")


def test_head_ct_with_nested_folder(tmp_path: Path) -> None:
    for index in range(3):
        write_image(tmp_path / "head_ct" / "head_ct" / f"{index:03d}.png", mode="L")
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n0,1\n1,0\n2,1\n")
    assert [(s.image.name, s.label) for s in read_dataset("headct", tmp_path)] == [
        ("000.png", 1),
        ("001.png", 0),
        ("002.png", 1),
    ]
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n0,yes\n")
    with pytest.raises(DatasetLayoutError, match="line 2"):
        read_dataset("headct", tmp_path)


def test_brats_bmad_layout(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "good" / "img" / "00001.png", mode="L")
    write_image(tmp_path / "test" / "good" / "img" / "00002.png", mode="L")
    write_image(tmp_path / "test" / "Ungood" / "img" / "00003.png", mode="L")
    write_mask(tmp_path / "test" / "Ungood" / "label" / "00003.png", (1, 1, 2, 2))
    assert summary(read_dataset("brats", tmp_path)) == [
        ("brats", "test", "00002.png", NORMAL, None),
        ("brats", "test", "00003.png", ANOMALOUS, "00003.png"),
        ("brats", "train", "00001.png", NORMAL, None),
    ]
    (tmp_path / "test" / "Ungood" / "label" / "00003.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"Ungood/label/00003\.png is missing"):
        read_dataset("brats", tmp_path)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def mnist_fixture(root: Path) -> np.ndarray:
    root.mkdir(parents=True, exist_ok=True)
    train_images = np.arange(4 * 28 * 28, dtype=np.uint64).reshape(4, 28, 28) % 251
    write_idx(root / "train-images-idx3-ubyte.gz", train_images, compress=True)
    write_idx(root / "train-labels-idx1-ubyte", np.array([0, 1, 2, 1]))
    write_idx(root / "t10k-images-idx3-ubyte", np.full((3, 28, 28), 7))
    write_idx(root / "t10k-labels-idx1-ubyte", np.array([1, 5, 0]))
    return train_images


def test_mnist_one_vs_all_and_multi_class(tmp_path: Path) -> None:
    train_images = mnist_fixture(tmp_path / "mnist")
    one_vs_all = read_dataset("mnist", tmp_path / "mnist", normal_classes=[1], cache_dir=tmp_path / "cache")
    assert {s.category for s in one_vs_all} == {"1"}
    train = [s for s in one_vs_all if s.split == "train"]
    assert len(train) == 2 and all(s.label == NORMAL for s in train)
    assert [s.label for s in one_vs_all if s.split == "test"] == [NORMAL, ANOMALOUS, ANOMALOUS]
    decoded = np.asarray(Image.open(train[0].image))
    np.testing.assert_array_equal(decoded, train_images[1].astype(np.uint8))
    assert load_image(train[0]).shape == (3, 28, 28)

    multi = read_dataset("mnist", tmp_path / "mnist", normal_classes=["0", "5"], cache_dir=tmp_path / "cache")
    assert {s.category for s in multi} == {"0+5"}
    assert [s.label for s in multi if s.split == "test"] == [ANOMALOUS, NORMAL, NORMAL]

    every_class = read_dataset("mnist", tmp_path / "mnist", cache_dir=tmp_path / "cache")
    assert len({s.category for s in every_class}) == 10


def test_mnist_bad_input(tmp_path: Path) -> None:
    mnist_fixture(tmp_path)
    with pytest.raises(ValueError, match="normal class 12"):
        read_dataset("mnist", tmp_path, normal_classes=[12], cache_dir=tmp_path / "cache")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DatasetLayoutError, match="bad magic"):
        read_dataset("mnist", tmp_path, normal_classes=[1], cache_dir=tmp_path / "cache")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetLayoutError, match="t10k-labels-idx1-ubyte .*missing"):
        read_dataset("mnist", tmp_path, normal_classes=[1])


def cifar_record(label: int, red: int, green: int, blue: int) -> bytes:
    return bytes([label]) + bytes([red]) * 1024 + bytes([green]) * 1024 + bytes([blue]) * 1024


def test_cifar10_binary_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for index in range(1, 6):
        (folder / f"data_batch_{index}.bin").write_bytes(cifar_record(index % 2, 10 * index, 0, 255))
    (folder / "test_batch.bin").write_bytes(cifar_record(0, 1, 2, 3) + cifar_record(3, 4, 5, 6))
    samples = read_dataset("cifar10", tmp_path, normal_classes=["airplane"], cache_dir=tmp_path / "cache")
    train = [s for s in samples if s.split == "train"]
    assert len(train) == 2 and {s.category for s in samples} == {"airplane"}
    pixel = np.asarray(Image.open(train[0].image))[5, 7]
    assert pixel.tolist() == [20, 0, 255]
    assert [s.label for s in samples if s.split == "test"] == [NORMAL, ANOMALOUS]
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetLayoutError, match="not a whole number of 3073-byte records"):
        read_dataset("cifar10", tmp_path, normal_classes=[0], cache_dir=tmp_path / "cache")
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(DatasetLayoutError, match=r"lacks batch files \['data_batch_4.bin'\]"):
        read_dataset("cifar10", tmp_path, normal_classes=[0])


def test_generic_folder_layout(tmp_path: Path) -> None:
    line = tmp_path / "line7"
    write_image(line / "reference" / "r0.png")
    write_image(line / "good" / "g0.png")
    write_image(line / "defect" / "d0.png")
    write_mask(line / "masks" / "d0.bmp", (0, 0, 1, 1))
    assert summary(read_dataset("folder", tmp_path)) == [
        ("line7", "test", "d0.png", ANOMALOUS, "d0.bmp"),
        ("line7", "test", "g0.png", NORMAL, None),
        ("line7", "train", "r0.png", NORMAL, None),
    ]
    write_image(line / "defect" / "d1.png")
    with pytest.raises(DatasetLayoutError, match=r"lacks masks for \['d1.png'\]"):
        read_dataset("folder", tmp_path)
    with pytest.raises(DatasetLayoutError, match="good is missing"):
        write_image(tmp_path / "line8" / "defect" / "x.png")
        read_dataset("folder", tmp_path, categories=["line8"])


def test_registry_rejects_unknown_names_and_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        read_dataset("imagenet", tmp_path)
    with pytest.raises(ValueError, match=r"does not take options \['shots'\]"):
        read_dataset("mvtec", tmp_path, shots=4)
