"""A request checked against the settings and resolved to one concrete variant.

Sizes come from IMAGE_SIZES and qualities from IMAGE_QUALITIES only, so the
variants one preview can ever have are known in advance (`variant_bound`);
`format=auto` picks WebP when the Accept header names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.canvas_artifacts.models import ArtifactRecord
from engines.canvas_artifacts.variants.query import VariantQuery
from engines.config import Settings
from engines.http.errors import Unprocessable

RASTER_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
"""Source types that are rasterised; SVG, HTML and render-refs are not."""


MIME_TYPES = {fmt: mime for mime, fmt in RASTER_FORMATS.items()}


EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


LOSSY = frozenset({"jpeg", "webp"})


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
