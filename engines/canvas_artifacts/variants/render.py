"""Rendering one variant with Pillow: decode, check, orient, shrink, re-encode."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engines.canvas_artifacts.variants.spec import VariantSpec
from engines.http.errors import Unprocessable

if TYPE_CHECKING:
    from PIL import Image

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


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
