"""Where one frame's result objects live in the results bucket: deterministic keys, so replays overwrite."""
from __future__ import annotations

from datetime import timezone
from typing import NamedTuple

from pydantic import AwareDatetime


class ResultKeys(NamedTuple):
    """The three object keys of one frame's result."""

    result: str
    map: str
    overlay: str


def result_prefix(domain: str, line: str, timestamp: AwareDatetime, frame_id: str) -> str:
    """results/{domain}/{line}/{YYYY-MM-DD}/{frame_id}/ with the date taken in UTC, so replays hit the same key."""
    day = timestamp.astimezone(timezone.utc).strftime("%Y-%m-%d")
    return f"results/{domain}/{line}/{day}/{frame_id}/"


def result_keys(domain: str, line: str, timestamp: AwareDatetime, frame_id: str) -> ResultKeys:
    """Deterministic keys of result.json, map.png and overlay.jpg for one frame."""
    prefix = result_prefix(domain, line, timestamp, frame_id)
    return ResultKeys(result=prefix + "result.json", map=prefix + "map.png", overlay=prefix + "overlay.jpg")


def input_key(result_key: str, suffix: str) -> str:
    """The key of a frame's image as received, next to its result.json: {result prefix}input{suffix}."""
    return result_key.rsplit("/", 1)[0] + "/input" + suffix
