"""moto's S3 server holding the scale seed's blobs, with a listing that scales to 1M keys.

`python -m bench.s3_server --port P --bucket B --keys-dir D` creates the
bucket, puts every key of `D/keys-*.txt` straight into moto's backend (the
seed's blobs: the same small PNG each; 1M puts over HTTP would take most of
an hour), then serves S3 over HTTP like `moto_server`.

The one change to moto: `list_objects_v2` without a delimiter. moto sorts
the whole bucket for every page (1M keys, 1000 pages: O(n log n) each, a
listing of hours); here the sorted names are kept and a page is a bisect,
new names merged in as they come. Answers are the same keys, in the same
order, with the same continuation tokens; everything else is moto's.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import sys
from pathlib import Path
from typing import Any

from moto.s3 import models as s3_models

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--keys-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    s3_models.S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[method-assign]
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
