"""Jobs bench/scale.py runs in a process of their own (so their peak RSS is theirs alone).

`python -m bench.scale_jobs retention`: one retention pass, exactly what
`engines gc --apply` runs before its blob scan (`expire_all`), with its
progress lines; the settings come from the environment, as for `engines`.
"""

from __future__ import annotations

import sys

from engines.app import build_runtime
from engines.config import Settings
from engines.lifecycle.delete import expire_all


def main(argv: list[str]) -> int:
    if argv != ["retention"]:
        raise SystemExit("usage: python -m bench.scale_jobs retention")
    runtime = build_runtime(Settings())
    for plan in expire_all(runtime, apply=True, progress=lambda m: print(m, flush=True)):
        print(f"retention: done {plan}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
