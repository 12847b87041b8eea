"""Pretrained weights that cannot be had give a quick WeightsUnavailableError saying how to supply them."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from model import InCTRLv2, InCTRLv2Config, WeightsUnavailableError


@pytest.mark.parametrize("backbone", ["ViT-B-16-plus-240", "efficientnet-lite0"])
def test_missing_weights_file_fails_fast(tmp_path: Path, backbone: str) -> None:
    missing = tmp_path / "weights.bin"
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=f"{missing} does not exist"):
        InCTRLv2(InCTRLv2Config(backbone=backbone, pretrained=str(missing)), device="cpu")
    assert time.monotonic() - started < 3.0


def test_uri_weights_need_the_callers_resolver_and_go_through_it(tmp_path: Path) -> None:
    config = InCTRLv2Config(backbone="efficientnet-lite0", pretrained="s3://no-bucket/absent.pth")
    with pytest.raises(WeightsUnavailableError, match="are a URI: the model reads local files"):
        InCTRLv2(config, device="cpu")
    asked: list[str] = []

    def resolver(ref: str) -> Path:
        asked.append(ref)
        return tmp_path / "missing.pth"

    with pytest.raises(FileNotFoundError):
        InCTRLv2(config, device="cpu", weights_resolver=resolver)
    assert asked == ["s3://no-bucket/absent.pth"]


def test_default_hub_tag_offline_fails_within_15_s(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Force the hub client offline with an empty cache, so the test never downloads even where network exists.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        InCTRLv2(InCTRLv2Config(), device="cpu")
    assert time.monotonic() - started < 15.0
    message = str(info.value)
    assert "laion400m_e32" in message and "ViT-B-16-plus-240" in message
    assert "pretrained=/path/to/file" in message and "s3://" in message
    # The error says it once: open_clip's own root-logger ERROR with the same text is not repeated to the user.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


def test_random_weights_are_announced_once_by_us_not_by_open_clip(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained=None), device="cpu")
    assert [r.name for r in caplog.records if r.name == "root"] == []
    assert any("seeded random weights" in r.getMessage() for r in caplog.records)


def test_tiny_backbone_refuses_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="random by design"):
        InCTRLv2(InCTRLv2Config(backbone="tiny", pretrained="laion400m_e32"), device="cpu")
