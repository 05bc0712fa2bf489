"""Image variants of raster previews: resized copies rendered once, stored, served.

`GET .../content?w=256&format=webp` (and the same on a signed URL) answers
a copy that fits inside w x h, aspect kept, never upscaled, EXIF orientation
applied and metadata stripped. Sizes come from IMAGE_SIZES and qualities from
IMAGE_QUALITIES only, so the variants one preview can ever have are a small set
known in advance (`variant_bound`), whatever callers ask for.

A variant is a blob beside its source (`.../preview/{artifact_id}.v/...`)
plus a media_v2 DerivedArtifact of kind `canvas_preview_variant` under the
preview's asset. Its record id is derived from (tenant, env, artifact,
variant), so finding it is one primary-key read and two concurrent first
renders insert one record: the loser's insert is ignored. The blob key ends
in the rendered bytes' hash, so a loser whose bytes differ never overwrites
the winner's blob; it deletes its own instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

import anyio
from fastapi import Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from engines.canvas_artifacts import repository as repo
from engines.canvas_artifacts.content import presign_ttl, serve_blob
from engines.canvas_artifacts.models import ArtifactRecord
from engines.config import Settings
from engines.db.engine import retry_on_disconnect
from engines.db.writer import CommitOutcomeUnknown, write_transaction
from engines.http.errors import NotFound, ServiceUnavailable, Unprocessable
from engines.media_v2 import repository as media_repo
from engines.media_v2.models import DerivedArtifact
from engines.runtime import Runtime
from engines.storage.ingest import ingest_bytes
from engines.storage.keys import canvas_key

if TYPE_CHECKING:
    from PIL import Image

VARIANT_KIND = "canvas_preview_variant"
RASTER_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
"""Source types that are rasterised; SVG, HTML and render-refs are not."""
MIME_TYPES = {fmt: mime for mime, fmt in RASTER_FORMATS.items()}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
LOSSY = frozenset({"jpeg", "webp"})
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_UNBOUNDED = 1 << 30

FormatName = Literal["webp", "png", "jpeg", "auto"]


class VariantQuery(BaseModel):
    """What a client asked for; checked against the settings by `resolve`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    w: int | None = Field(default=None, ge=1, le=_UNBOUNDED)
    h: int | None = Field(default=None, ge=1, le=_UNBOUNDED)
    format: FormatName | None = None
    q: int | None = Field(default=None, ge=1, le=100)

    def params(self) -> dict[str, str]:
        """The query parameters that ask for this variant, as strings (URL and signature)."""
        return {name: str(value) for name, value in self.model_dump().items()
                if value is not None}


async def variant_query(w: Annotated[int | None, Query(ge=1, le=_UNBOUNDED)] = None,
                  h: Annotated[int | None, Query(ge=1, le=_UNBOUNDED)] = None,
                  format: FormatName | None = None,
                  q: Annotated[int | None, Query(ge=1, le=100)] = None) -> VariantQuery | None:
    """Dependency: the variant a `/content` request asks for, None for the stored bytes.

    Async so that FastAPI calls it on the loop, not through a thread-pool hop."""
    if w is None and h is None and format is None and q is None:
        return None
    return VariantQuery(w=w, h=h, format=format, q=q)


@dataclass(frozen=True)
class VariantSpec:
    """A resolved variant: concrete format and quality, bounds from IMAGE_SIZES."""

    w: int | None
    h: int | None
    format: str
    q: int | None

    @property
    def name(self) -> str:
        quality = f"-q{self.q}" if self.q is not None else ""
        return f"{self.w or 0}x{self.h or 0}{quality}.{EXTENSIONS[self.format]}"

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.format]


def check_request(settings: Settings, record: ArtifactRecord, query: VariantQuery) -> str:
    """422 unless this artifact can have this variant here; returns the source format."""
    if not settings.image_transforms:
        raise Unprocessable("image transforms are disabled (IMAGE_TRANSFORMS=false)",
                            code="image.transforms_disabled")
    source = RASTER_FORMATS.get(record.mime_type or "")
    if record.kind != "preview" or record.meta.get("render_ref") or source is None:
        raise Unprocessable("only PNG, JPEG and WebP previews have image variants",
                            code="image.not_rasterisable")
    for name, value in (("w", query.w), ("h", query.h)):
        if value is not None and value not in settings.image_sizes:
            raise Unprocessable(f"{name}={value} is not an allowed size; use one of "
                                f"{_listed(settings.image_sizes)}", code="image.size_not_allowed")
    if query.q is not None and query.q not in settings.image_qualities:
        raise Unprocessable(f"q={query.q} is not an allowed quality; use one of "
                            f"{_listed(settings.image_qualities)}",
                            code="image.quality_not_allowed")
    return source


def _listed(values: list[int]) -> str:
    return ", ".join(str(value) for value in sorted(values))


def default_quality(settings: Settings) -> int:
    """The quality of a lossy variant asked for without `q`: the middle of IMAGE_QUALITIES
    (75 of the default 50,75,90), so it is one of the variants `q` can name."""
    qualities = sorted(set(settings.image_qualities))
    return qualities[(len(qualities) - 1) // 2]


def variant_bound(settings: Settings) -> int:
    """The most variants one preview can ever have: each of w and h is a size or absent,
    times PNG (no quality) plus JPEG and WebP at each quality. 343 by default."""
    sizes = len(set(settings.image_sizes)) + 1
    lossless = len(RASTER_FORMATS) - len(LOSSY)
    return sizes * sizes * (lossless + len(LOSSY) * len(set(settings.image_qualities)))


def accepts_webp(accept: str) -> bool:
    """True when Accept names image/webp with a non-zero q. A bare */* does not count:
    browsers without WebP send it too."""
    for part in accept.split(","):
        media, *params = (item.strip() for item in part.split(";"))
        if media.lower() != "image/webp":
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def resolve(settings: Settings, record: ArtifactRecord, query: VariantQuery,
            accept: str) -> VariantSpec:
    source = check_request(settings, record, query)
    fmt = query.format or source
    if fmt == "auto":
        fmt = "webp" if accepts_webp(accept) else source
    quality = (query.q or default_quality(settings)) if fmt in LOSSY else None
    return VariantSpec(w=query.w, h=query.h, format=fmt, q=quality)


# ---- identity and storage of a variant -----------------------------------------------------


def _hex(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def variant_id_prefix(tenant_id: str, env: str, artifact_id: str) -> str:
    """Shared by every variant record of one artifact: `variants_of` is one range scan."""
    return f"mdv{_hex(tenant_id, env, artifact_id)[:20]}"


def variant_record_id(record: ArtifactRecord, spec: VariantSpec) -> str:
    return (variant_id_prefix(record.tenant_id, record.env, record.id)
            + _hex(spec.name)[:12])


def variant_key(record: ArtifactRecord, spec: VariantSpec, sha256: str) -> str:
    """`.../canvas/{canvas}/preview/{artifact_id}.v/{w}x{h}[-qN]-{hash}.{ext}`: beside the
    source, under the tenant's prefix, and never another artifact's key (those have no
    `/` after the kind)."""
    folder = canvas_key(record.tenant_id, record.env, record.canvas_id, "preview",
                        f"{record.id}.v", "")
    stem, ext = spec.name.rsplit(".", 1)
    return f"{folder}/{stem}-{sha256[:16]}.{ext}"


def variants_of(conn: Connection, tenant_id: str, env: str,
                artifact_id: str) -> list[DerivedArtifact]:
    """Every live stored variant of one artifact, for DELETE to remove with it."""
    found = media_repo.artifacts_with_id_prefix(
        conn, tenant_id, env, VARIANT_KIND, variant_id_prefix(tenant_id, env, artifact_id))
    return [a for a in found if a.meta.get("source_artifact_id") == artifact_id]


def _remember(rt: Runtime, variant: DerivedArtifact, read_started: float) -> DerivedArtifact:
    """Cache a stored variant (`rt.variants`): it never changes, and it is dropped with its
    source artifact. It is reached only after the artifact's own record was read, and a
    cached one whose blob is missing sends the request back to the database
    (`service.content`), so a hit only ever saves the second read of a thumbnail GET."""
    rt.variants.put(variant.id, variant, read_started, scope=(variant.tenant_id, variant.env),
                    subject=variant.meta.get("source_artifact_id"))
    return variant


@retry_on_disconnect
def _find(rt: Runtime, tenant_id: str, env: str, variant_id: str) -> DerivedArtifact | None:
    started = rt.variants.now()
    with rt.engine.connect() as conn:
        found = media_repo.get_artifact(conn, tenant_id, env, variant_id)
    return _remember(rt, found, started) if found is not None else None


@retry_on_disconnect
def _record(rt: Runtime, record: ArtifactRecord, derived: DerivedArtifact) -> DerivedArtifact:
    """Insert if absent and return whichever record won (ours or a concurrent twin's).

    Only while the source is live: a delete that ran during the render makes
    this a 404 rather than a variant nothing would ever remove. A COMMIT
    whose outcome is unknown is resolved by the read that follows.
    """
    started = rt.variants.now()
    with contextlib.suppress(CommitOutcomeUnknown), write_transaction(rt.engine) as conn:
        if not repo.lock_live_record(conn, record):
            raise NotFound("artifact not found", code="canvas.not_found")
        media_repo.insert_artifact(conn, derived, if_absent=True)
    with rt.engine.connect() as conn:
        winner = media_repo.get_artifact(conn, derived.tenant_id, derived.env, derived.id)
    if winner is None:
        raise ServiceUnavailable("the variant could not be recorded; retry",
                                 code="metadata.write_failed")
    return _remember(rt, winner, started)


def tombstone_variants(conn: Connection, tenant_id: str, env: str, artifact_ids: list[str],
                       now: datetime) -> list[str]:
    """Mark deleted artifacts' variants deleted, on the delete's transaction, with one
    lookup for them all; returns their URIs, whose blobs the delete removes once it has
    committed."""
    deleted = set(artifact_ids)
    found = [a for a in media_repo.artifacts_with_id_prefix(
        conn, tenant_id, env, VARIANT_KIND,
        *(variant_id_prefix(tenant_id, env, artifact_id) for artifact_id in artifact_ids))
        if a.meta.get("source_artifact_id") in deleted]
    media_repo.mark_artifacts_deleted(conn, tenant_id, env, [v.id for v in found], now)
    return [v.uri for v in found]


# ---- rendering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    data: bytes
    width: int
    height: int


def _scaled(side: int, numerator: int, denominator: int) -> int:
    """side * numerator / denominator rounded to the nearest pixel (halves up), at least 1:
    integers only, so no float error moves a side by one."""
    return max(1, (2 * side * numerator + denominator) // (2 * denominator))


def _target_size(width: int, height: int, spec: VariantSpec) -> tuple[int, int]:
    """Fit inside w x h, aspect kept, never upscaled: the binding side is exactly the size
    asked for, the other one rounded to the nearest pixel (300x200 at w=128: 128x85)."""
    w = spec.w if spec.w is not None and spec.w < width else None
    h = spec.h if spec.h is not None and spec.h < height else None
    if w is not None and (h is None or w * height <= h * width):
        return w, _scaled(height, w, width)
    if h is not None:
        return _scaled(width, h, height), h
    return width, height


def _rgb_or_rgba(image: Image.Image, fmt: str) -> Image.Image:
    """A mode the encoder takes and the resampler filters well (not a palette)."""
    from PIL import Image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if fmt == "jpeg" and has_alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if image.mode in ("RGB", "L") or (image.mode == "RGBA" and fmt != "jpeg"):
        return image
    return image.convert("RGBA" if has_alpha else "RGB")


def render(data: bytes, spec: VariantSpec, max_pixels: int) -> Rendered:
    """Decode, check, orient, shrink and re-encode one image (CPU-bound: not on the loop).

    The pixel count is read from the header and checked before anything is
    decoded, so a decompression bomb costs a header parse, not its memory.
    Pillow is imported here, not with the module: a worker that never renders
    keeps its ~6 MiB of RSS out of every request's process.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data), formats=list(_PIL_FORMATS.values())) as source:
            pixels = source.width * source.height
            if pixels > max_pixels:
                raise Unprocessable(f"image has {pixels} pixels, over the limit of {max_pixels}",
                                    code="image.too_many_pixels")
            orientation = source.getexif().get(0x0112, 1)
            upright = (source.height, source.width) if orientation in (5, 6, 7, 8) \
                else source.size
            target = _target_size(*upright, spec)
            # JPEG can decode at 1/2, 1/4, 1/8 scale: ask for the smallest that still covers
            raw_target = target[::-1] if orientation in (5, 6, 7, 8) else target
            source.draft(None, raw_target)
            ImageOps.exif_transpose(source, in_place=True)  # no copy of the full-size pixels
            image = _rgb_or_rgba(source, spec.format)
            if image.size != target:
                # not thumbnail(): it re-derives the size from the aspect and may land a
                # pixel short of the binding side
                image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
            image.info.clear()  # encoders copy some metadata (comments, ICC) from info
            out = io.BytesIO()
            options = {"quality": spec.q} if spec.q is not None else {}
            image.save(out, format=_PIL_FORMATS[spec.format], **options)
            return Rendered(out.getvalue(), image.width, image.height)
    except Image.DecompressionBombError as exc:
        raise Unprocessable(str(exc), code="image.too_many_pixels") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Unprocessable(f"the preview is not a readable image ({exc})",
                            code="image.corrupt") from exc


RENDER_NICE = 10
"""Render threads run at this nice value: request handling (nice 0) gets the CPU first."""

_limiter: anyio.CapacityLimiter | None = None
_executor: ThreadPoolExecutor | None = None


def render_limiter() -> anyio.CapacityLimiter:
    """Process-wide: at most one variant made per core, whatever the request concurrency.

    A slot covers the whole miss (source read, render, store, record), so the
    requests waiting for one wait on the event loop and hold no worker thread
    or database connection that other requests need.
    """
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(os.cpu_count() or 1)
    return _limiter


def _lower_priority() -> None:
    """Linux keeps a nice value per thread: only the render threads are lowered."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RENDER_NICE)


def render_executor() -> ThreadPoolExecutor:
    """The threads that decode and encode (one per core), apart from the request threads,
    so a burst of first renders slows other requests as little as possible."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="render",
                                       initializer=_lower_priority)
    return _executor


# ---- the request ---------------------------------------------------------------------------


async def _render_and_store(rt: Runtime, record: ArtifactRecord, spec: VariantSpec,
                            variant_id: str) -> DerivedArtifact:
    source_key = rt.store.key_for(record.uri)
    if source_key is None:
        raise ServiceUnavailable("the artifact's blob is not in the configured store",
                                 code="storage.foreign_uri")
    async with render_limiter():
        # a request for the same variant may have stored it while this one waited
        stored = await run_in_threadpool(_find, rt, record.tenant_id, record.env, variant_id)
        if stored is not None:
            return stored
        data = await run_in_threadpool(rt.store.read_all, source_key)
        rendered = await asyncio.get_running_loop().run_in_executor(
            render_executor(), render, data, spec, rt.settings.max_image_pixels)
        sha256 = hashlib.sha256(rendered.data).hexdigest()
        # the final write is atomic in both stores: a reader never sees half a variant
        blob = await ingest_bytes(rt.store, variant_key(record, spec, sha256), rendered.data,
                                  spec.mime_type)
        derived = DerivedArtifact(
            id=variant_id, parent_asset_id=record.media_asset_id, tenant_id=record.tenant_id,
            env=record.env, kind=VARIANT_KIND, uri=blob.uri, created_at=datetime.now(UTC),
            meta={"source_artifact_id": record.id, "canvas_id": record.canvas_id,
                  "w": spec.w, "h": spec.h, "format": spec.format, "q": spec.q,
                  "width": rendered.width, "height": rendered.height,
                  "mime_type": spec.mime_type, "sha256": blob.sha256,
                  "size_bytes": blob.size})
        # On a failed insert the blob stays: a concurrent identical render may own the same
        # key. An unreferenced one is an orphan for `engines gc`.
        try:
            winner = await run_in_threadpool(_record, rt, record, derived)
        except NotFound:
            await rt.discard_fresh_blob(blob.key)
            raise
    if winner.uri != blob.uri:  # a concurrent render with other bytes won
        await rt.discard_fresh_blob(blob.key)
    return winner


async def serve_variant(rt: Runtime, request: Request, record: ArtifactRecord,
                        query: VariantQuery, *, inline: bool) -> Response:
    """The stored variant (rendered on first request) with the same rules as /content."""
    spec = resolve(rt.settings, record, query, request.headers.get("accept", ""))
    variant_id = variant_record_id(record, spec)
    variant = rt.variants.get(variant_id) or await run_in_threadpool(
        _find, rt, record.tenant_id, record.env, variant_id)
    if variant is None:
        variant = await _render_and_store(rt, record, spec, variant_id)
    key = rt.store.key_for(variant.uri)
    if key is None:
        raise ServiceUnavailable("the variant's blob is not in the configured store",
                                 code="storage.foreign_uri")
    view = record.model_copy(update={
        "uri": variant.uri, "mime_type": variant.meta["mime_type"],
        "size_bytes": variant.meta["size_bytes"], "sha256": variant.meta["sha256"]})
    response = await serve_blob(request, rt.store, key, view, inline=inline,
                                presign_ttl=presign_ttl(rt.settings))
    if query.format == "auto":
        response.headers["Vary"] = "Accept"
    return response
