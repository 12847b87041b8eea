"""The one s3:// URI type: an object (`S3Uri.parse`) or a key prefix (`S3Uri.parse_prefix`).

Every place that takes an s3:// string (frame references, registry prefixes, checkpoints, weights,
reference image folders) parses it here, so one set of rules decides what a usable URI is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "s3://"

# S3 bucket naming rules: 3-63 characters of lowercase letters, digits, dots and hyphens, starting and ending
# with a letter or digit, no two adjacent dots, not an IP address.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


class InvalidS3Uri(ValueError):
    """A string is not a usable s3://bucket/key URI; the message says why."""


def is_s3_uri(text: str) -> bool:
    """Whether a reference names S3 (else it is a local path)."""
    return text.startswith(SCHEME)


@dataclass(frozen=True)
class S3Uri:
    """s3://{bucket}/{key}; for a prefix, `key` is empty (the whole bucket) or ends in '/'."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        """An object URI; InvalidS3Uri unless the bucket follows the S3 naming rules and the key is one the
        S3 client can address (non-empty, no '.' or '..' path segment, no control character)."""
        bucket, key = _split(uri)
        if not key:
            raise InvalidS3Uri(f"s3 URI needs both bucket and key: {_shown(uri)}")
        return cls(bucket, key)

    @classmethod
    def parse_prefix(cls, uri: str) -> S3Uri:
        """A prefix URI, s3://bucket or s3://bucket/some/prefix[/]: the key normalised to '' or 'some/prefix/'."""
        bucket, key = _split(uri)
        return cls(bucket, key.strip("/") + "/" if key.strip("/") else "")

    def child(self, name: str) -> S3Uri:
        """The object or prefix `name` under this prefix."""
        return S3Uri(self.bucket, (self.key.rstrip("/") + "/" if self.key else "") + name.lstrip("/"))

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"


def _split(uri: str) -> tuple[str, str]:
    if not is_s3_uri(uri):
        raise InvalidS3Uri(f"not an s3:// URI: {_shown(uri)}")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise InvalidS3Uri(f"s3 URI needs a bucket: {_shown(uri)}")
    if not _BUCKET_NAME.match(bucket) or ".." in bucket or _IP_ADDRESS.match(bucket):
        raise InvalidS3Uri(f"invalid bucket name {_shown(bucket)} in {_shown(uri)}")
    if any(segment in {".", ".."} for segment in key.split("/")):
        raise InvalidS3Uri(f"object key with a '.' or '..' segment in {_shown(uri)}")
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in key):
        raise InvalidS3Uri(f"object key with a control character in {_shown(uri)}")
    return bucket, key


def _shown(text: str, limit: int = 200) -> str:
    """repr() of a possibly huge, hostile string, cut so that error messages stay small."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
