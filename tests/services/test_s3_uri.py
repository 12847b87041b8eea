"""The one s3:// URI type: objects, prefixes and what it refuses."""
from __future__ import annotations

import pytest

from services.storage.uri import InvalidS3Uri, S3Uri, is_s3_uri


def test_objects_need_a_key_and_prefixes_are_normalised() -> None:
    assert S3Uri.parse("s3://cams/line-1/f.png") == S3Uri("cams", "line-1/f.png")
    with pytest.raises(InvalidS3Uri, match="bucket and key"):
        S3Uri.parse("s3://cams/")
    assert S3Uri.parse_prefix("s3://cams") == S3Uri("cams", "")
    assert S3Uri.parse_prefix("s3://cams/line-1") == S3Uri.parse_prefix("s3://cams/line-1/") == S3Uri("cams", "line-1/")
    assert S3Uri.parse_prefix("s3://cams/line-1").child("f.png") == S3Uri("cams", "line-1/f.png")
    assert S3Uri.parse_prefix("s3://cams").child("f.png") == S3Uri("cams", "f.png")
    assert str(S3Uri("cams", "line-1/f.png")) == "s3://cams/line-1/f.png"


@pytest.mark.parametrize(
    "uri", ["/etc/passwd", "s3://", "s3://Bad_Bucket/k", "s3://10.0.0.1/k", "s3://cams/../k", "s3://cams/a\x00b"]
)
def test_unusable_uris_are_refused_by_both_parsers(uri: str) -> None:
    for parse in (S3Uri.parse, S3Uri.parse_prefix):
        with pytest.raises(InvalidS3Uri):
            parse(uri)
    assert is_s3_uri(uri) == uri.startswith("s3://")
