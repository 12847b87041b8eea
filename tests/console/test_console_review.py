"""Review operations on the real S3 server and a SQLite index: mark normal, confirm defect, versions, rollback."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.datasets.folder import read_folder
from services.console.originals import OriginalImageMissing
from services.console.review import AlreadyReferenced, FrameNotIndexed
from services.index import ReviewAction
from services.results.encoding import decode_map_png

from .conftest import ConsoleWorld, png_bytes, texture

pytestmark = pytest.mark.integration


def test_mark_normal_adds_the_frame_as_a_new_version_and_a_similar_frame_then_scores_lower(console_world: ConsoleWorld) -> None:
    world = console_world
    odd = texture(100, stripes=9)  # a product variant the capsule references have not seen
    frame = world.inspect("capsule", "line-1", "odd-1", odd)
    before = world.inspect("capsule", "line-1", "odd-2", texture(101, stripes=9), minutes=1).score

    outcome = world.review.mark_normal("capsule", "line-1", "odd-1", actor="victor", note="new supplier, fine")

    record = outcome.record
    assert record.version == 2 and record.parent_version == 1 and record.shots == 4
    assert record.actor == "victor" and record.note == "new supplier, fine"
    assert world.registry.current_version("capsule") == 2
    assert record.threshold != world.registry.show("capsule", 1).threshold  # recalibrated on K=4
    # The added reference is the frame's original image (8-bit PNG round trip).
    added = np.asarray(Image.open(io.BytesIO(world.registry.reference_images("capsule")[-1][1])))
    np.testing.assert_allclose(added.transpose(2, 0, 1) / 255.0, odd, atol=1 / 255)
    [review] = world.index.reviews("capsule", "line-1", "odd-1")
    assert (review.action, review.actor, review.registry_version) == (ReviewAction.MARK_NORMAL, "victor", 2)
    assert review.example_uri == outcome.example.image_uri and world.store.exists(world.examples.bucket, review.example_uri.split("/", 3)[3])

    after = world.inspect("capsule", "line-1", "odd-3", texture(101, stripes=9), minutes=2)
    assert after.reference_version == "capsule/v2"
    assert after.score < before - 0.02, (before, after.score)
    assert frame.score > after.score


def test_a_frame_already_among_the_references_is_refused_until_a_rollback_removes_it(console_world: ConsoleWorld) -> None:
    world = console_world
    world.inspect("capsule", "line-1", "f-1", texture(200, stripes=6))
    world.review.mark_normal("capsule", "line-1", "f-1", actor="victor")
    with pytest.raises(AlreadyReferenced, match="already a reference of capsule: marked normal by victor"):
        world.review.mark_normal("capsule", "line-1", "f-1", actor="rita")
    assert world.registry.current_version("capsule") == 2

    rolled_back = world.review.activate("capsule", 1, actor="victor")
    assert rolled_back.version == 1 and world.registry.current_version("capsule") == 1
    assert [r.version for r in world.review.versions("capsule")] == [1, 2]
    again = world.review.mark_normal("capsule", "line-1", "f-1", actor="rita")
    assert again.record.version == 3 and again.record.parent_version == 1
    with pytest.raises(FrameNotIndexed, match="capsule/line-1/nope"):
        world.review.mark_normal("capsule", "line-1", "nope", actor="rita")


def test_confirm_defect_stores_image_thresholded_map_and_note_in_the_folder_layout_training_reads(
    console_world: ConsoleWorld, tmp_path
) -> None:
    world = console_world
    scratched = texture(300, stripes=4)
    scratched[:, 20:30, 10:50] = 1.0
    frame = world.inspect("capsule", "line-2", "scratch-1", scratched)
    world.inspect("capsule", "line-2", "ok-1", texture(301, stripes=4), minutes=1)

    outcome = world.review.confirm_defect("capsule", "line-2", "scratch-1", actor="victor", note="scratch across")
    world.review.mark_normal("capsule", "line-2", "ok-1", actor="victor")

    example = outcome.example
    assert example.label == "defect" and example.note == "scratch across" and example.reviewer == "victor"
    mask_key = example.mask_uri.split("/", 3)[3]
    mask = np.asarray(Image.open(io.BytesIO(world.store.get_bytes(world.examples.bucket, mask_key))))
    expected = decode_map_png(world.store.get_bytes(frame.bucket, frame.map_key)) >= frame.map_statistics.threshold
    assert mask.shape == scratched.shape[1:] and set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask == 255, expected)
    [review] = world.index.reviews("capsule", "line-2", "scratch-1")
    assert review.action is ReviewAction.CONFIRM_DEFECT and review.note == "scratch across"

    references = {"capsule": [png for _, png in world.registry.reference_images("capsule")]}
    summary = world.examples.export_folder(tmp_path / "labelled", ["capsule"], references)
    assert (summary.good, summary.defect, summary.reference) == (1, 1, 4)
    samples = read_folder(tmp_path / "labelled", ["capsule"])
    by_split = {(s.split, s.label, s.image.name, s.mask.name if s.mask else None) for s in samples}
    assert ("test", 1, "line-2--scratch-1.png", "line-2--scratch-1.png") in by_split
    assert ("test", 0, "line-2--ok-1.png", None) in by_split
    assert sum(1 for s in samples if s.split == "train") == 4

    # The latest decision wins: relabelling the defect as normal removes it from defect/ and masks/.
    world.review.mark_normal("capsule", "line-2", "scratch-1", actor="rita")
    assert not world.store.exists(world.examples.bucket, mask_key)
    assert not world.store.exists(world.examples.bucket, example.image_uri.split("/", 3)[3])


def test_the_original_is_read_from_the_result_prefix_first_and_a_frame_without_one_cannot_be_taught(console_world: ConsoleWorld) -> None:
    world = console_world
    frame = world.inspect("fabric", "line-3", "inline-1", texture(400, stripes=9), keep_original=False)
    with pytest.raises(OriginalImageMissing, match="inline-1: its original image is stored neither as"):
        world.review.mark_normal("fabric", "line-3", "inline-1", actor="victor")
    with pytest.raises(OriginalImageMissing):
        world.review.confirm_defect("fabric", "line-3", "inline-1", actor="victor")
    assert world.registry.current_version("fabric") == 1 and not world.index.reviews("fabric")

    kept = texture(401, stripes=9)
    world.store.put_bytes(frame.bucket, world.originals.input_stem(frame) + ".png", png_bytes(kept))
    assert world.originals.locate(frame) == (frame.bucket, frame.result_key.rsplit("/", 1)[0] + "/input.png")
    outcome = world.review.mark_normal("fabric", "line-3", "inline-1", actor="victor")
    assert outcome.record.version == 2 and outcome.record.threshold == 0.6  # a given threshold stays as given
    bank = world.registry.load("fabric").bank
    alone = world.detector.detect(torch.from_numpy(kept)[None], bank).scores[0]
    old = world.detector.detect(torch.from_numpy(kept)[None], world.registry.load("fabric", 1).bank).scores[0]
    assert float(alone) < float(old)


def test_frames_bucket_lookup_takes_exact_names_only(console_world: ConsoleWorld) -> None:
    world = console_world
    frame = world.inspect("fabric", "line-3", "a.b", texture(500, stripes=9), keep_original=False)
    stem = world.originals.frames_key_stem(frame)
    world.store.put_bytes(world.frames_bucket, stem + ".c.png", b"another frame's upload")
    with pytest.raises(OriginalImageMissing):
        world.originals.locate(frame)
    world.store.put_bytes(world.frames_bucket, stem + ".jpg", b"x")
    assert world.originals.locate(frame) == (world.frames_bucket, stem + ".jpg")
