"""The hostile corpus through a real FrameConsumer on the real broker and S3: every message ends as a result
or a dead letter with the expected reason, no dead letter exceeds the broker's limit, every original can be
recovered, and the consumer never exits. Prints the figures (messages, results, dead letters by reason)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from types import ModuleType

import pytest
from kafka import KafkaProducer

from services.consumer.dead_letters import original_of
from services.consumer.frame_consumer import FrameConsumer
from services.protocol.messages import DeadLetter, InspectionResult
from services.storage.object_store import ObjectStore
from services.settings import ServiceSettings

from .corpus import RESULT, build_corpus

pytestmark = pytest.mark.integration


def hostile_settings(settings: ServiceSettings) -> ServiceSettings:
    return settings.model_copy(update={"max_image_object_bytes": 200_000, "max_poll_records": 8, "max_in_flight": 16})


def send_raw(settings: ServiceSettings, messages: list[tuple[bytes | None, bytes]]) -> None:
    # Tansu has no size limit, so oversize messages reach the consumer the way a misconfigured client's would.
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=20_000_000)
    try:
        for key, value in messages:
            producer.send(settings.frames_topics[0], partition=0, key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def test_every_hostile_class_ends_as_a_result_or_the_right_dead_letter(
    service_settings: ServiceSettings,
    object_store: ObjectStore,
    statistics_inspector: ModuleType,
    read_topic: Callable[..., list[bytes]],
) -> None:
    settings = hostile_settings(service_settings)
    cases = build_corpus(settings, object_store)
    assert len({case.name for case in cases}) >= 30
    send_raw(settings, [(case.key, case.value) for case in cases])

    with FrameConsumer.connect(settings, statistics_inspector.inspect_by_statistics, object_store) as consumer:
        stats = consumer.run(max_frames=len(cases), idle_timeout_s=60)  # returning at all: no exit
    assert stats.handled == len(cases)

    letters = [DeadLetter.from_bytes(v) for v in read_topic(settings.dead_letter_topic, sum(stats.dead_letters.values()))]
    results = [InspectionResult.from_bytes(v) for v in read_topic(settings.results_topic, stats.results)]
    by_offset = {letter.offset: letter for letter in letters}
    result_ids = Counter(result.frame_id for result in results)
    outcomes: dict[str, str] = {}
    for offset, case in enumerate(cases):
        letter = by_offset.get(offset)
        outcome = letter.reason.value if letter is not None else RESULT
        outcomes[case.name] = outcome
        assert outcome in case.expected, (case.name, letter.detail if letter else "result")
    assert len(letters) + len(results) == len(cases)

    # Two frames under one id: one result, the other refused; the same message twice: two results, one key.
    assert sorted([outcomes["duplicate-id-first"], outcomes["duplicate-id-other-image"]]) == ["duplicate_frame", RESULT]
    assert result_ids["replayed"] == 2 and result_ids["dup"] == 1
    for letter in letters:
        assert len(letter.to_bytes()) <= settings.max_message_bytes, letter.reason
        key, value = original_of(letter, object_store)
        case = cases[letter.offset]
        assert value == case.value and key == case.key, case.name
    assert any(letter.payload_truncated for letter in letters)  # the large originals went to the store

    reasons = Counter(letter.reason.value for letter in letters)
    print(f"\nhostile corpus: {len(cases)} messages ({len({c.name for c in cases})} classes), "
          f"{len(results)} results, {len(letters)} dead letters {dict(sorted(reasons.items()))}, 0 consumer exits")  # fmt: skip
