"""Per-domain target FPR and recall on defect images through the registry and the domain CLI, on the real
local S3 server: the target is kept by add_references, defect images never move the threshold."""
from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from model import InCTRLv2, InCTRLv2Config
from model.calibration import fpr_threshold
from services.storage.object_store import ObjectStore
from services.registry.domain_registry import DomainRegistry
from services.registry.records import RegistryError
from services.registry.commands import domain_app
from services.settings import ServiceSettings
from inctrl.dev.local_stack import StackEndpoints

from .conftest import png_bytes, texture

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def detector() -> InCTRLv2:
    return InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None))


@pytest.fixture
def store(service_settings: ServiceSettings) -> ObjectStore:
    return ObjectStore.from_settings(service_settings)


@pytest.fixture
def registry(store: ObjectStore, unique_name: Callable[[str], str]) -> DomainRegistry:
    return DomainRegistry(store, f"s3://{unique_name('models')}/registry/")


REFERENCES = [texture(i) for i in range(4)]
DEFECTS = [texture(20 + i, stripes=9) for i in range(3)] + [texture(30)]


def test_the_target_sets_the_threshold_and_defects_only_report_recall(registry: DomainRegistry, detector: InCTRLv2) -> None:
    plain = registry.register("plain", "capsule", REFERENCES, detector, target_fpr=0.05)
    judged = registry.register("judged", "capsule", REFERENCES, detector, target_fpr=0.05, defect_images=DEFECTS)
    scores = judged.calibration.normal_scores
    assert judged.target_fpr == judged.calibration.target_fpr == 0.05
    assert judged.threshold == pytest.approx(fpr_threshold(scores, 0.05))
    assert judged.threshold == pytest.approx(plain.threshold)  # the defects did not move it
    assert judged.threshold < registry.register("strict", "capsule", REFERENCES, detector).threshold  # default 1%
    defect_scores = judged.calibration.defect_scores
    assert len(defect_scores) == len(DEFECTS) and judged.defect_images == ["000.png", "001.png", "002.png", "003.png"]
    assert judged.calibration.recall == sum(s >= judged.threshold for s in defect_scores) / len(DEFECTS)
    assert plain.calibration.recall is None and plain.defect_images == []


def test_add_references_keeps_the_target_and_measures_recall_on_the_stored_defects(
    registry: DomainRegistry, detector: InCTRLv2
) -> None:
    registry.register("kept", "capsule", REFERENCES[:3], detector, target_fpr=0.2, defect_images=DEFECTS[:2])
    grown = registry.add_references("kept", [REFERENCES[3]], detector, actor="bob")
    assert (grown.shots, grown.target_fpr, grown.calibration.target_fpr) == (4, 0.2, 0.2)
    assert grown.threshold == pytest.approx(fpr_threshold(grown.calibration.normal_scores, 0.2))
    assert len(grown.calibration.defect_scores) == 2 and grown.calibration.recall is not None
    more = registry.add_references("kept", [texture(40)], detector, actor="carol", target_fpr=0.02, defect_images=DEFECTS[2:])
    assert (more.target_fpr, len(more.calibration.defect_scores), len(more.defect_images)) == (0.02, 4, 4)
    assert more.threshold == pytest.approx(fpr_threshold(more.calibration.normal_scores, 0.02))
    with pytest.raises(RegistryError, match=r"'kept'.*target false-positive rate 0.5"):
        registry.add_references("kept", [texture(41)], detector, actor="dan", target_fpr=0.5)
    with pytest.raises(RegistryError, match=r"'fresh'.*target false-positive rate 0.0"):
        registry.register("fresh", "capsule", REFERENCES, detector, target_fpr=0.0)
    assert [r.version for r in registry.history("kept")] == [1, 2, 3]


def test_reference_images_of_each_version_in_bank_order(registry: DomainRegistry, detector: InCTRLv2) -> None:
    registry.register("refs", "capsule", REFERENCES[:2], detector, threshold=0.5)
    registry.add_references("refs", [REFERENCES[2]], detector, actor="bob")
    current = registry.reference_images("refs")
    assert [name for name, _ in current] == ["000.png", "001.png", "002.png"]
    first = registry.reference_images("refs", 1)
    assert [name for name, _ in first] == ["000.png", "001.png"] and first == current[:2]
    levels = np.asarray(Image.open(io.BytesIO(current[2][1])))
    np.testing.assert_array_equal(levels, np.round(REFERENCES[2].transpose(1, 2, 0) * 255).astype(np.uint8))


def test_domain_cli_register_show_and_list_report_target_thresholds_and_recall(
    registry: DomainRegistry, store: ObjectStore, detector: InCTRLv2, stack_endpoints: StackEndpoints,
    unique_name: Callable[[str], str], tmp_path,
) -> None:  # fmt: skip
    bucket = unique_name("refs")
    store.ensure_bucket(bucket)
    for i, image in enumerate(REFERENCES):
        store.put_bytes(bucket, f"omega/good/{i}.png", png_bytes(image))
    defects = tmp_path / "defects"
    defects.mkdir()
    for i, image in enumerate(DEFECTS):
        (defects / f"{i}.png").write_bytes(png_bytes(image))
    checkpoint = detector.save(tmp_path / "checkpoint")
    runner, env = CliRunner(), stack_endpoints.environment()
    registered = runner.invoke(
        domain_app,
        ["register", "omega", "--class-name", "capsule", "--images", f"s3://{bucket}/omega/good", "--target-fpr", "0.05",
         "--defect-images", str(defects), "--checkpoint", str(checkpoint), "--registry", registry.uri],
        env=env,
    )  # fmt: skip
    assert registered.exit_code == 0, registered.output
    record = registry.show("omega")
    calibration = record.calibration
    assert record.target_fpr == 0.05 and len(calibration.defect_scores) == len(DEFECTS)
    assert calibration.recall is not None and calibration.pixel_threshold is not None
    shown = runner.invoke(domain_app, ["show", "omega", "--registry", registry.uri], env=env)
    assert shown.exit_code == 0, shown.output
    lines = dict(line.split("\t", 1) for line in shown.output.strip().splitlines()[1:])
    assert lines["target FPR"] == "5%"
    assert lines["image threshold"] == (
        f"{record.threshold:.4f} (calibrated leave-one-out on 4 normal scores and 32 of nuisance views of the references)"
    )
    assert calibration.view_scores == 32 and len(calibration.normal_scores) == 4 + 32
    assert lines["pixel threshold"] == f"{calibration.pixel_threshold:.4f}"
    assert lines["recall"] == f"{100 * calibration.recall:.3g}% of 4 defect images at the image threshold"
    listed = runner.invoke(domain_app, ["list", "--registry", registry.uri], env=env)
    assert listed.exit_code == 0, listed.output
    fields = listed.output.strip().split("\t")
    assert fields[:2] == ["omega", "v1"]
    assert fields[-3:] == [f"pixel={calibration.pixel_threshold:.4f}", "fpr<=5%", f"recall={100 * calibration.recall:.3g}%"]
    bad = runner.invoke(
        domain_app,
        ["register", "omega", "--class-name", "capsule", "--images", f"s3://{bucket}/omega/good", "--target-fpr", "0.7",
         "--checkpoint", str(checkpoint), "--registry", registry.uri],
        env=env,
    )  # fmt: skip
    assert bad.exit_code != 0 and "target false-positive rate 0.7" in bad.output
    assert registry.current_version("omega") == 1
