"""The S3 client's timestamp parser reads every shape as botocore's own parser does."""

from __future__ import annotations

import pytest
from botocore.utils import parse_timestamp as botocore_timestamp

from engines.storage.s3_timestamps import parse_timestamp


@pytest.mark.parametrize("value", [
    "2026-12-02T18:26:00.000Z",  # S3's XML timestamps (LastModified, Initiated)
    "2026-12-02T18:26:00Z",
    "2026-12-02T18:26:00.123Z",
    "2026-12-02T18:26:00.123456789Z",  # beyond microseconds: cut, as dateutil cuts it
    "2024-02-29T23:59:59.999999Z",
    "Wed, 02 Dec 2026 18:26:00 GMT",  # headers (Last-Modified, Expires)
    "2026-12-02T18:26:00+01:00",
    "2026-12-02T18:26:00",
    "1764699960",
    1764699960,
    1764699960.5,
])
def test_same_instant_as_botocore(value: object) -> None:
    ours, theirs = parse_timestamp(value), botocore_timestamp(value)
    assert ours == theirs
    assert ours.utcoffset() == theirs.utcoffset()


@pytest.mark.parametrize("value", ["2026-13-02T18:26:00Z", "2026-12-02T18:26:60Z", "soon"])
def test_what_botocore_refuses_is_refused(value: str) -> None:
    with pytest.raises(ValueError) as theirs:
        botocore_timestamp(value)
    with pytest.raises(ValueError) as ours:
        parse_timestamp(value)
    assert str(ours.value) == str(theirs.value)
