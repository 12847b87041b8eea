"""`produce` command and produce_folder: inline vs by-reference frames on the real stack."""

from __future__ import annotations

from dataclasses import astuple

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from services.protocol.messages import InspectionRequest
from services.storage.object_store import ObjectStore
from services.storage.uri import S3Uri
from services.producer.frame_producer import frame_id_for, produce_folder
from services.settings import ServiceSettings
from inctrl.cli import app

pytestmark = pytest.mark.integration


def write_images(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    files = {
        "small a.png": np.full((16, 16, 3), 90, dtype=np.uint8),
        "small-b.png": np.full((16, 16, 3), 180, dtype=np.uint8),
        "large.png": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
    }
    written = {}
    for name, pixels in files.items():
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        (folder / name).write_bytes(buffer.getvalue())
        written[name] = buffer.getvalue()
    (folder / "notes.txt").write_text("not an image")
    return written


def test_produce_command_sends_small_inline_and_large_by_reference(
    tmp_path: Path,
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    read_topic: Callable[..., list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written = write_images(tmp_path / "frames")
    settings = service_settings.model_copy(update={"inline_image_max_bytes": 5000})
    for name, value in settings.to_environment().items():
        monkeypatch.setenv(name, value)
    outcome = CliRunner().invoke(app, ["produce", str(tmp_path / "frames"), "--domain", "washer", "--line", "l7"])
    assert outcome.exit_code == 0, outcome.output
    assert "sent 3 frames" in outcome.output and "(2 inline, 1 by S3 reference)" in outcome.output

    requests = {r.frame_id: r for r in map(InspectionRequest.from_bytes, read_topic(settings.frames_topics[0], 3))}
    assert set(requests) == {frame_id_for(name, content) for name, content in written.items()}
    large = requests[frame_id_for("large.png", written["large.png"])]
    assert large.image is None and object_store.get_bytes(*astuple(S3Uri.parse(large.image_uri or ""))) == written["large.png"]
    small = requests[frame_id_for("small a.png", written["small a.png"])]
    assert small.image == written["small a.png"] and small.frame_id.startswith("small-a-")
    assert {r.domain for r in requests.values()} == {"washer"} and {r.line for r in requests.values()} == {"l7"}


def test_produce_folder_rejects_missing_or_empty_folders(tmp_path: Path, service_settings: ServiceSettings) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        produce_folder(tmp_path / "absent", "washer", "l1", service_settings)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        produce_folder(tmp_path / "empty", "washer", "l1", service_settings)


def test_large_image_without_object_store_is_refused(
    tmp_path: Path, service_settings: ServiceSettings
) -> None:
    write_images(tmp_path / "frames")
    settings = service_settings.model_copy(update={"inline_image_max_bytes": 5000})
    with pytest.raises(ValueError, match="too large to send inline"):
        produce_folder(tmp_path / "frames", "washer", "l1", settings)
