"""The S3 client's timestamp parser: ISO 8601 UTC in C, anything else as botocore would.

botocore parses every timestamp of a response with dateutil (~55 us each), so the
LastModified of a 1000-key ListObjectsV2 page costs more than the rest of the page;
`engines gc` lists every blob of the store. S3 writes the timestamps in XML bodies
(LastModified, Initiated) as `2026-12-02T18:26:00.000Z`: those go through
`datetime.fromisoformat` (~0.1 us) and come back as the same instant in UTC. Any other
shape (the RFC 822 dates of headers, epoch numbers, offsets) is handed to botocore's own
parser, so nothing is parsed differently, only sooner.
"""

from __future__ import annotations

import re
from datetime import datetime

from botocore.utils import parse_timestamp as botocore_timestamp

_ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z")
"""The one shape S3 gives its XML timestamps, which `fromisoformat` reads exactly."""


def parse_timestamp(value: object) -> datetime:
    """A response timestamp as an aware datetime, equal to what botocore would return."""
    if isinstance(value, str) and _ISO_UTC.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:  # a field out of range (month 13, second 60): botocore decides
            pass
    return botocore_timestamp(value)
