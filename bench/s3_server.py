"""moto's S3 server holding the scale seed's blobs, with a listing that scales to 1M keys.

`python -m bench.s3_server --port P --bucket B --keys-dir D` creates the
bucket, puts every key of `D/keys-*.txt` straight into moto's backend (the
seed's blobs: the same small PNG each; 1M puts over HTTP would take most of
an hour), then serves S3 over HTTP like `moto_server`.

The one change to moto: `list_objects_v2` without a delimiter. moto sorts
the whole bucket for every page (1M keys, 1000 pages: O(n log n) each, a
listing of hours); here the sorted names are kept and a page is a bisect,
new names merged in as they come. And its generic serializer takes ~0.5 ms
a key (a 1M-key listing: 8 minutes of moto alone); here that page's XML is
written directly. Answers are the same keys, in the same order, with the
same continuation tokens and fields; everything else is moto's.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from moto import settings as moto_settings
from moto.s3 import models as s3_models
from moto.s3 import responses as s3_responses

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
_original = s3_models.S3Backend.list_objects_v2
_sorted: dict[int, tuple[list[str], int]] = {}
"""id(bucket.keys) -> (sorted names, how many names the store had when sorted)."""


def _names(bucket: Any) -> list[str]:
    store = bucket.keys
    names, size = _sorted.get(id(store), ([], -1))
    if len(store) > size:  # names came: sort again (deleted names are skipped when listed)
        names = sorted(store.keys())
    _sorted[id(store)] = (names, len(store))
    return names


def list_objects_v2(self, bucket, prefix, delimiter, continuation_token, start_after,  # type: ignore[no-untyped-def]
                    max_keys):
    if delimiter:
        return _original(self, bucket, prefix, delimiter, continuation_token, start_after,
                         max_keys)
    names = _names(bucket)
    after = (self._pagination_tokens.get(continuation_token) if continuation_token
             else start_after) or ""
    start = bisect.bisect_right(names, max(after, prefix or "")) if after else \
        bisect.bisect_left(names, prefix or "")
    found: list[Any] = []
    at = start
    while at < len(names) and len(found) < max_keys + 1:
        name = names[at]
        at += 1
        if prefix and not name.startswith(prefix):
            break
        key = bucket.keys.get(name)
        if key is not None and not isinstance(key, s3_models.FakeDeleteMarker):
            found.append(key)
    truncated = len(found) > max_keys
    found = found[:max_keys]
    token = None
    if truncated:
        token = hashlib.md5(found[-1].name.encode()).hexdigest()  # noqa: S324 - moto's token
        self._pagination_tokens[token] = found[-1].name
    return found, truncated, token


_original_response = s3_responses.S3Response.list_objects_v2


def list_objects_v2_response(self):  # type: ignore[no-untyped-def]
    """moto's ListObjectsV2 answer without a delimiter or owners, as one string."""
    query = self.querystring
    if query.get("delimiter", [None])[0] or query.get("fetch-owner", [False])[0] or \
            query.get("continuation-token", [None])[0] == "":
        return _original_response(self)
    bucket = self.backend.get_bucket(self.bucket_name)
    prefix = self._get_querystring(self.request, self.uri).get("prefix", [None])[0]
    if isinstance(prefix, bytes):
        prefix = prefix.decode()
    token = query.get("continuation-token", [None])[0]
    start_after = query.get("start-after", [None])[0]
    max_keys = int(query.get("max-keys", [moto_settings.get_s3_default_max_keys()])[0])
    encoding = query.get("encoding-type", [None])[0]
    keys, truncated, next_token = self.backend.list_objects_v2(
        bucket=bucket, prefix=prefix, delimiter=None, continuation_token=token,
        start_after=start_after, max_keys=max_keys)
    shown_prefix = (quote(prefix) if prefix else "") if encoding == "url" else (prefix or "")
    parts = ['<?xml version="1.0" encoding="UTF-8"?>'
             '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
             f"<Name>{escape(bucket.name)}</Name><Prefix>{escape(shown_prefix)}</Prefix>"
             f"<MaxKeys>{max_keys}</MaxKeys><KeyCount>{len(keys)}</KeyCount>"
             f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
    parts += [f"<Contents><Key>{escape(key.safe_name(encoding))}</Key>"
              f"<LastModified>{key.last_modified_ISO8601}</LastModified>"
              f"<ETag>{escape(key.etag)}</ETag><Size>{key.size}</Size>"
              f"<StorageClass>{key.storage_class}</StorageClass></Contents>" for key in keys]
    if encoding:
        parts.append(f"<EncodingType>{escape(encoding)}</EncodingType>")
    if next_token:
        parts.append(f"<NextContinuationToken>{next_token}</NextContinuationToken>")
    if not token and start_after:
        parts.append(f"<StartAfter>{escape(start_after)}</StartAfter>")
    parts.append("</ListBucketResult>")
    return 200, {"Content-Type": "application/xml"}, "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--keys-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    s3_models.S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[method-assign]
    s3_responses.S3Response.list_objects_v2 = list_objects_v2_response  # type: ignore[method-assign]
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.server import ThreadedMotoServer

    backend = s3_models.s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(args.bucket, "us-east-1")
    count = 0
    for path in sorted(args.keys_dir.glob("keys-*.txt")):
        with open(path) as fh:
            for line in fh:
                backend.put_object(args.bucket, line.rstrip("\n"), PNG)
                count += 1
    print(f"s3: {count} objects in {args.bucket}", flush=True)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    print(f"s3: serving on 127.0.0.1:{args.port}", flush=True)
    try:
        server._thread.join()  # noqa: SLF001 - serve until terminated
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
