"""Index the result.json objects already in the results bucket (what a run left behind, e.g. the demo's).

The indexer normally fills the index from the results topic as frames stream; results written before it
ran (or on a stack whose topics are gone) are still in S3, one result.json per frame. Upserts are
idempotent and the newest event wins, so backfilling a bucket the indexer also covered changes nothing.
Opt-in (`inctrl console --backfill`): it lists the whole prefix, fine for a demo, not for a year of frames.
"""
from __future__ import annotations

import logging

from pydantic import ValidationError

from services.index.repository import InspectionIndex
from services.protocol.messages import InspectionResult
from services.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

RESULT_OBJECT = "result.json"


def backfill_results(store: ObjectStore, bucket: str, index: InspectionIndex, prefix: str = "results/") -> int:
    """Upsert every result.json under `prefix`; returns how many were read. Invalid ones are logged and skipped."""
    keys = [key for key in store.list_keys(bucket, prefix) if key.endswith("/" + RESULT_OBJECT)]
    indexed = 0
    for key in keys:
        try:
            result = InspectionResult.model_validate_json(store.get_bytes(bucket, key))
        except ValidationError as error:
            logger.warning("skipping invalid result object", extra={"key": f"s3://{bucket}/{key}", "error": str(error)})
            continue
        index.upsert_result(result)
        indexed += 1
    logger.info("results backfilled", extra={"bucket": bucket, "prefix": prefix, "results": indexed, "objects": len(keys)})
    return indexed
