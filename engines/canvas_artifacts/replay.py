"""Replay documents: the summary kept in the record, and time windows."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from engines.canvas_artifacts.models import ReplayDocument


def replay_meta(doc: ReplayDocument) -> dict[str, Any]:
    frames = doc.keyframes
    return {
        "keyframe_count": len(frames),
        "duration_ms": frames[-1].t_ms - frames[0].t_ms if frames else 0,
        "snapshot_count": sum(1 for f in frames if f.type == "snapshot"),
        "rev_from": doc.rev_from,
        "mode": doc.mode,
    }


def cut_window(document: dict[str, Any], from_ms: int, to_ms: int) -> dict[str, Any]:
    """The document with keyframes limited to [from_ms, to_ms].

    Preceded by the last snapshot at or before from_ms so a player can start
    there; that snapshot is not repeated when it is itself in the window.
    """
    frames: list[dict[str, Any]] = document["keyframes"]
    times = [f["t_ms"] for f in frames]
    start, stop = bisect_left(times, from_ms), bisect_right(times, to_ms)
    window = frames[start:stop]
    for index in range(bisect_right(times, from_ms) - 1, -1, -1):
        if frames[index]["type"] == "snapshot":
            if index < start:
                window = [frames[index], *window]
            break
    return {**document, "keyframes": window}
