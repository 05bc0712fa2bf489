"""Real images for the variant tests, made with Pillow (nothing is checked in)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)


def two_tone(width: int, height: int, *, split: str = "vertical") -> Image.Image:
    """Red then blue: left/right halves ("vertical" split) or top/bottom ("horizontal")."""
    image = Image.new("RGB", (width, height), BLUE)
    half = (0, 0, width // 2, height) if split == "vertical" else (0, 0, width, height // 2)
    image.paste(RED, half)
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png(width: int = 600, height: int = 300, **options: object) -> bytes:
    return encode(two_tone(width, height), "PNG", **options)


def webp(width: int = 600, height: int = 300) -> bytes:
    return encode(two_tone(width, height), "WEBP", quality=90)


def rotated_jpeg(width: int = 400, height: int = 200) -> bytes:
    """A landscape JPEG whose EXIF says "rotate 90° clockwise to display" (orientation 6).

    Its left half is red, so the upright picture is portrait with red on top.
    """
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(two_tone(width, height), "JPEG", quality=95, exif=exif.tobytes(),
                  comment=b"camera notes")


def png_bomb(side: int = 100_000) -> bytes:
    """A valid PNG header declaring side x side pixels with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
