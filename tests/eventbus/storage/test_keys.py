"""Validation of bucket names, keys and metadata, and the error hierarchy."""

from __future__ import annotations

import pytest

from eventbus.errors import ConflictError, DeepfaasError, NotFoundError, ValidationFailedError
from eventbus.storage import (
    BucketExistsError,
    BucketNotEmptyError,
    InvalidBucketNameError,
    InvalidKeyError,
    InvalidMetadataError,
    KeyConflictError,
    NoSuchBucketError,
    NoSuchKeyError,
    StorageError,
    StorageUnavailableError,
    is_valid_key,
    normalize_metadata,
    validate_bucket_name,
    validate_key,
)


@pytest.mark.parametrize(
    "name", ["abc", "my-bucket", "my.bucket.v2", "0numbers9", "a" * 63, "bkt-1234abcd"]
)
def test_valid_bucket_names(name: str) -> None:
    assert validate_bucket_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason_part"),
    [
        ("ab", "3-63"),
        ("a" * 64, "3-63"),
        ("Bucket", "lower-case"),
        ("bucket_1", "lower-case"),
        (".bucket", "starting"),
        ("bucket-", "ending"),
        ("my..bucket", "'..'"),
        ("my-.bucket", "'.-'"),
        ("192.168.0.1", "IP address"),
        ("xn--bucket", "reserved"),
        ("bucket-s3alias", "reserved"),
        ("", "3-63"),
    ],
)
def test_invalid_bucket_names(name: str, reason_part: str) -> None:
    with pytest.raises(InvalidBucketNameError) as caught:
        validate_bucket_name(name)
    assert reason_part in (caught.value.reason or "")
    assert caught.value.bucket == name


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "dir/file.txt",
        "with space",
        "ünïcødé/日本語",
        "a+b%20c",
        "...",  # only exact '.' and '..' segments are refused
        "..hidden/x..",
        ".dotfile",
        "x" * 255 + "/" + "y" * 255,
        "/".join(["é" * 127] * 4) + "/abcd",  # 1024 bytes
    ],
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key
    assert is_valid_key(key)


@pytest.mark.parametrize(
    ("key", "reason_part"),
    [
        ("", "empty"),
        (" \t", "empty"),
        ("é" * 512 + "a", "1025 bytes"),
        ("a\x00b", "U+0000"),
        ("a\x1bb", "U+001B"),
        ("a\x7f", "U+007F"),
        ("a\u0085", "U+0085"),
        ("a\\b", "backslash"),
        ("..\\x", "backslash"),
        ("/abs", "absolute"),
        ("a//b", "empty path segment"),
        ("dir/", "empty path segment"),
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a/../../b", "'..'"),
        ("a/./b", "'.'"),
        ("x" * 256, "255"),
        ("bad\udcffutf8", "UTF-8"),
    ],
)
def test_invalid_keys(key: str, reason_part: str) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        validate_key(key, bucket="bkt")
    error = caught.value
    assert reason_part in (error.reason or ""), error.reason
    assert (error.key, error.bucket) == (key, "bkt")
    assert error.fields["reason"] == error.reason
    assert not is_valid_key(key)


def test_metadata_is_normalized() -> None:
    assert normalize_metadata({"Project": "x", "RUN-id": "4 2"}) == {
        "project": "x",
        "run-id": "4 2",
    }
    assert normalize_metadata(None) == {}


@pytest.mark.parametrize(
    "metadata",
    [
        {"": "x"},
        {"has space": "x"},
        {"ünï": "x"},
        {"k": "é"},
        {"k": "line\nbreak"},
        {"k": "trailing "},
        {"Dup": "1", "dup": "2"},
        {"k": "v" * 2048},
        {"k": 1},
    ],
)
def test_invalid_metadata(metadata: dict[str, str]) -> None:
    with pytest.raises(InvalidMetadataError) as caught:
        normalize_metadata(metadata, bucket="bkt", key="k")
    assert caught.value.code == "invalid" and caught.value.reason


def test_error_hierarchy_maps_to_gateway_codes() -> None:
    cases: list[tuple[StorageError, type[DeepfaasError], str]] = [
        (InvalidKeyError("x"), ValidationFailedError, "invalid"),
        (InvalidBucketNameError("x"), ValidationFailedError, "invalid"),
        (NoSuchBucketError("x"), NotFoundError, "not_found"),
        (NoSuchKeyError("x"), NotFoundError, "not_found"),
        (BucketExistsError("x"), ConflictError, "conflict"),
        (BucketNotEmptyError("x"), ConflictError, "conflict"),
        (KeyConflictError("x"), ConflictError, "conflict"),
        (StorageUnavailableError("x"), StorageError, "unavailable"),
    ]
    for error, family, code in cases:
        assert isinstance(error, StorageError) and isinstance(error, family)
        assert error.code == code
    error = NoSuchKeyError("gone", bucket="b", key="k", reason="why")
    assert (str(error), error.bucket, error.key, error.reason) == ("gone", "b", "k", "why")
    assert error.fields == {"bucket": "b", "key": "k", "reason": "why"}
