"""The only module that decodes and encodes pixels.

* :func:`decode` applies EXIF orientation (pixels upright, as viewers show them) and refuses what is not a whole
  image — an HTML error page, a truncated body (a JPEG cut short and closed with an end marker included: JPEGs are
  decoded by libjpeg-turbo through simplejpeg, which reports the premature end that Pillow hides and fills with
  grey), a GIF whose first frame covers a sliver of its screen, a decompression bomb — with an
  :class:`ImageError` whose message is the reason. :func:`verify` does the same checks with the least memory.
* :func:`decode_scaled` decodes a JPEG at the smallest DCT scale (M/8) that keeps a given short side (shard's
  ``--draft``, the perceptual hash); :func:`decode_rgb` goes from libjpeg-turbo straight to an RGB array (crop).
* :func:`image_end` finds where an image's own bytes end (PNG, JPEG, GIF, WebP), so junk appended after it is not
  stored.
* :func:`to_rgb` turns every mode (palette, grey, LA, RGBA, 16-bit, CMYK) into RGB, compositing alpha onto a
  background colour (white by default: Bitmoji renders are transparent PNGs).
* :func:`resize` has three modes — ``center-crop``, ``pad`` and ``keep-ratio`` — and uses area averaging (PIL's
  box filter) when shrinking and Lanczos when enlarging.
* :func:`encode` writes PNG, JPEG or WebP deterministically (no timestamps, no metadata).
* :func:`decode_array` is the trainers' fast path for images that a shard already holds normalised (RGB, one size):
  one OpenCV call to an RGB uint8 array, several times quicker than Pillow per small image.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageDraw, ImageFont, ImageOps

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 × 8000; anything larger is refused before its pixels are decoded
RESIZE_MODES = ("center-crop", "pad", "keep-ratio")
FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


class ImageError(ValueError):
    """A body that is not a usable image; ``str(e)`` is the reason, fit for a report."""


def sniff(data: bytes) -> str | None:
    """The image format named by the first bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def _not_an_image(data: bytes) -> str:
    if not data:
        return "empty body"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "an HTML page, not an image"
    if head.startswith(b"<?xml") or head.startswith(b"<svg"):
        return "XML/SVG, not a raster image"
    if head[:1] in (b"{", b"["):
        return "JSON text, not an image"
    return f"not an image (starts with {data[:8]!r})"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    fmt = sniff(data)
    if fmt is None:
        raise ImageError(_not_an_image(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError(f"decompression bomb refused ({e})") from None
    except Exception as e:  # PIL raises many types for bad headers
        # Pillow names the stream by its repr (<_io.BytesIO object at 0x7f…>): an address differs in every run
        reason = re.sub(r"<[^<>]* object at 0x[0-9a-f]+>", "the data", str(e))
        raise ImageError(f"unreadable {fmt} header ({reason})") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"{fmt} with no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(
            f"{w}x{h} = {w * h / 1e6:.0f} Mpx is over the {max_pixels / 1e6:.0f} Mpx limit (decompression bomb?)"
        )
    if im.format == "GIF" and im.tile:  # the first frame's box: what is outside it is no picture, only background
        x0, y0, x1, y1 = im.tile[0][1]
        if (x1 - x0) * (y1 - y0) < w * h / 4:
            raise ImageError(f"gif whose first frame ({x1 - x0}x{y1 - y0}) covers under a quarter of its {w}x{h} "
                             "screen")
    return im


_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1: as stored). From the header only: Pillow's PNG getexif() decodes the whole image to
    look for an eXIf chunk after the pixels, so a PNG's comes from a chunk before them (where writers put it)."""
    try:
        if im.format == "PNG":
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(0x0112, 1) or 1)
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a damaged EXIF block: the image as stored
        return 1


def _displayed(im: Image.Image, data: bytes) -> tuple[str, int, int]:
    w, h = (im.height, im.width) if _orientation(im) in _TRANSPOSED else (im.width, im.height)
    return (im.format or sniff(data) or "?").lower(), w, h


def probe(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Format, width and height as displayed (EXIF orientation applied) from the header alone (no pixel decode)."""
    return _displayed(_open(data, max_pixels), data)


def pixel_count(data: bytes) -> tuple[str, int]:
    """Format and width × height from the header (0 when the header is refused): what a decode will hold."""
    try:
        fmt, w, h = probe(data)
    except ImageError:
        return "", 0
    return fmt, w * h


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Fully decode an image body; the first frame of animations. Raises :class:`ImageError` with the reason."""
    return decode_scaled(data, 0, max_pixels)[0]


def jpeg_eighths(short: int, short_min: int) -> int:
    """The smallest libjpeg DCT scale M/8 (M = 1…8) that keeps a short side of ``short`` pixels at ``short_min`` or
    more (8: the whole image; also for ``short_min`` 0, which asks for it)."""
    if short_min <= 0:
        return 8
    return next((m for m in range(1, 8) if -(-short * m // 8) >= short_min), 8)


def decode_scaled(data: bytes, short_min: int | Callable[[int, int], int], max_pixels: int = DEFAULT_MAX_PIXELS
                  ) -> tuple[Image.Image, tuple[int, int], int]:
    """Decode at the smallest size that still has a short side of ``short_min`` pixels, where the format allows it:
    a JPEG at libjpeg-turbo's DCT scale M/8 (:func:`jpeg_eighths`: every coefficient is still read and checked, the
    inverse transform is smaller); other formats whole. Returns the upright image, the displayed size of the whole
    image and M (8 when whole), with the checks of :func:`decode`. ``short_min`` may be a function of the whole
    image's displayed width and height."""
    im = _open(data, max_pixels)
    orientation = _orientation(im)
    _, w, h = _displayed(im, data)
    eighths = 8
    if im.format == "JPEG" and im.mode in ("RGB", "L"):
        eighths = jpeg_eighths(min(im.size), short_min(w, h) if callable(short_min) else short_min)
        side = -(-min(im.size) * eighths // 8)  # the scaled short side: simplejpeg picks the same M for it
        scale = {} if eighths == 8 else {"min_width" if im.width <= im.height else "min_height": side}
        arr = _jpeg(data, "GRAY" if im.mode == "L" else "RGB", **scale)
        out = Image.fromarray(arr[..., 0] if im.mode == "L" else arr, im.mode)
        out.format = "JPEG"
        im = out
    else:
        if im.format == "JPEG":  # CMYK / YCCK: checked by libjpeg-turbo at 1/8 scale, decoded by Pillow
            _jpeg(data, "CMYK", min_width=1, min_height=1)
        _load(im)
    if orientation != 1:  # a camera's sideways-stored photo: upright, as every viewer shows it
        im = im.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else im
    return im, (w, h), eighths


def decode_rgb(data: bytes, background: Sequence[int] = (255, 255, 255),
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An upright H×W×3 RGB uint8 array, with the checks of :func:`decode`. A JPEG goes from libjpeg-turbo's buffer
    to the array with no Pillow image between (a Pillow RGB image takes 4 bytes a pixel): the least memory for
    work on large arrays (the detector)."""
    return decode_rgb_alpha(data, background, max_pixels, alpha=False)[0]


def decode_rgb_alpha(data: bytes, background: Sequence[int] = (255, 255, 255),
                     max_pixels: int = DEFAULT_MAX_PIXELS, alpha: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`decode_rgb`, and the image's alpha channel (H×W uint8) when it has real transparency (some pixel
    less than opaque; else None): what tells a figure from its background in a transparent PNG."""
    im = _open(data, max_pixels)
    orientation = _orientation(im)
    transparency = None
    if im.format == "JPEG" and im.mode in ("RGB", "L"):
        arr = _jpeg(data, "RGB")  # libjpeg expands grey to the same three equal channels as Pillow's convert
    else:
        _load(im)
        if alpha and (im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info):
            a = np.asarray(im.convert("RGBA"))[..., 3]
            transparency = a if a.min() < 255 else None
        arr = np.asarray(to_rgb(im, background))
        del im
    if orientation in _NP_TRANSPOSE:
        arr = np.ascontiguousarray(_NP_TRANSPOSE[orientation](arr))
        if transparency is not None:
            transparency = np.ascontiguousarray(_NP_TRANSPOSE[orientation](transparency))
    return arr, transparency


_NP_TRANSPOSE = {  # the same as _TRANSPOSE, on H×W×C arrays
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1),
}


def verify(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Format, width and height as displayed, after the same checks as :func:`decode`: a JPEG is decoded at 1/8
    scale (every byte of it is still read and checked, in 1/64 of the memory), other formats in full. Raises
    :class:`ImageError` with the reason."""
    im = _open(data, max_pixels)
    fmt, w, h = _displayed(im, data)
    if im.format == "JPEG":
        _jpeg(data, {"L": "GRAY", "CMYK": "CMYK"}.get(im.mode, "RGB"), min_width=1, min_height=1)
    else:
        _load(im)
    return fmt, w, h


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def _jpeg(data: bytes, colorspace: str, **scale: int) -> np.ndarray:
    """Decode with libjpeg-turbo, refusing a premature end (Pillow pads it with grey and says nothing). Other
    libjpeg warnings (extraneous bytes before a marker, common in camera files) leave a whole image: accepted.
    ``scale``: simplejpeg's min_width / min_height (a DCT-scaled decode)."""
    try:
        return simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True, **scale)
    except ValueError as e:
        if "premature end" in str(e).lower():
            raise ImageError(f"truncated jpeg ({e})") from None
        try:
            return simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=False, **scale)
        except ValueError as e2:
            raise ImageError(f"corrupt jpeg ({e2})") from None


def _load(im: Image.Image) -> None:
    fmt = (im.format or "image").lower()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
    except Image.DecompressionBombError as e:
        raise ImageError(f"decompression bomb refused ({e})") from None
    except Exception as e:
        msg = str(e)
        if "truncated" in msg or isinstance(e, EOFError):
            raise ImageError(f"truncated {fmt} ({msg or 'ends early'})") from None
        raise ImageError(f"corrupt {fmt} ({msg})") from None


_JPEG_MARKER = re.compile(rb"\xff+([\x01-\xcf\xd8-\xfe])")  # a marker inside entropy-coded data (not FF00, RSTn)


def image_end(data: bytes) -> int:
    """How many leading bytes of ``data`` are the image: the end of a PNG's IEND chunk, a JPEG's end-of-image marker,
    a GIF's trailer, a WebP's RIFF length. ``len(data)`` when the structure does not say (BMP, TIFF) or does not
    parse (the decoder has the last word on damage)."""
    try:
        end = {"png": _png_end, "jpeg": _jpeg_end, "gif": _gif_end, "webp": _webp_end}.get(sniff(data) or "")
        found = end(data) if end else None
    except (IndexError, ValueError, struct.error):
        found = None
    return found if found is not None and 0 < found <= len(data) else len(data)


def _png_end(data: bytes) -> int | None:
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        pos += 12 + length
        if kind == b"IEND":
            return pos
    return None


def _jpeg_end(data: bytes) -> int | None:
    pos = 2  # after SOI
    while pos < len(data):
        if data[pos] != 0xFF:
            return None
        while data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return pos
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            continue
        length = struct.unpack_from(">H", data, pos)[0]
        pos += length
        if marker == 0xDA:  # a scan: entropy-coded data runs to the next real marker
            m = _JPEG_MARKER.search(data, pos)
            if m is None:
                return None
            pos = m.start(1) - 1
    return None


def _gif_end(data: bytes) -> int | None:
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            return pos + 1
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image: descriptor, local colour table, LZW code size, then sub-blocks
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            return None
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    return None


def _webp_end(data: bytes) -> int | None:
    size = struct.unpack_from("<I", data, 4)[0]
    return 8 + size + (size & 1)


def decode_array(data: bytes) -> np.ndarray:
    """A shard image (PNG, JPEG or WebP as written by ``gandata shard``) → H×W×3 RGB uint8. Raises
    :class:`ImageError` when it does not decode."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ImageError("the image does not decode")
    return arr[..., ::-1]


def to_rgb(im: Image.Image, background: Sequence[int] = (255, 255, 255)) -> Image.Image:
    """RGB with any transparency composited onto ``background``."""
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = arr.max(initial=0)
        if im.mode == "F" and top <= 1.0:
            peak = 1.0  # float images (TIFF, EXR-like) hold 0–1
        else:
            peak = 65535.0 if im.mode.startswith("I;16") or top > 255 else 255.0
        im = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).round().astype(np.uint8), "L")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if not has_alpha:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, tuple(background[:3]) + (255,))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def _scale(im: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float],
           factor: float = 1.0) -> Image.Image:
    """``box`` (in the whole image's pixels) of ``im`` resized to ``size``. ``im`` may be the whole image reduced by
    ``factor`` (a DCT-scaled JPEG decode): the box is scaled, never recomputed from the reduced size, whose last row
    and column can stand for a partial block."""
    src_w, src_h = box[2] - box[0], box[3] - box[1]
    if factor == 1.0 and (src_w, src_h) == size and box == (0, 0, im.width, im.height):
        return im.copy()
    shrinking = size[0] <= src_w and size[1] <= src_h
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS
    return im.resize(size, resample, box=tuple(v * factor for v in box))


def resize(
    im: Image.Image, size: int, mode: str = "center-crop", pad_color: Sequence[int] = (255, 255, 255),
    whole: tuple[int, int, float] | None = None,
) -> Image.Image:
    """Resize to ``size``: a ``size``×``size`` square (``center-crop``, ``pad``) or smallest side = ``size``
    (``keep-ratio``). ``whole`` = (width, height, factor) when ``im`` is that image reduced by ``factor``
    (:func:`decode_scaled`): the geometry is the whole image's, so the output has the same size and framing."""
    if size < 1:
        raise ValueError("size must be a positive integer")
    w, h, f = whole if whole is not None else (*im.size, 1.0)
    if mode == "center-crop":
        side = min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        return _scale(im, (size, size), (left, top, left + side, top + side), f)
    if mode == "pad":
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        inner = _scale(to_rgb(im), (nw, nh), (0, 0, w, h), f)
        canvas = Image.new("RGB", (size, size), tuple(pad_color[:3]))
        canvas.paste(inner, ((size - nw) // 2, (size - nh) // 2))
        return canvas
    if mode == "keep-ratio":
        scale = size / min(w, h)
        return _scale(im, (max(1, round(w * scale)), max(1, round(h * scale))), (0, 0, w, h), f)
    raise ValueError(f"unknown resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}")


def encode(im: Image.Image, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode deterministically. ``fmt``: png, jpg/jpeg or webp; ``quality`` applies to jpg and webp."""
    try:
        pil_format = FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown image format {fmt!r}; use png, jpg or webp") from None
    buf = io.BytesIO()
    if pil_format == "PNG":
        im.save(buf, "PNG", compress_level=6)
    elif pil_format == "JPEG":
        im.save(buf, "JPEG", quality=quality, optimize=False, progressive=False)
    else:
        im.save(buf, "WEBP", quality=quality, method=4, exact=False)
    return buf.getvalue()


def pixel_digest(im: Image.Image) -> str:
    """sha256 of the decoded pixels (mode, size, bytes): equal for identical images however they were encoded."""
    h = hashlib.sha256(f"{im.mode}:{im.width}x{im.height}:".encode())
    h.update(im.tobytes())
    return h.hexdigest()


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizing
        return ImageFont.load_default()


class SheetLayout:
    """Where a contact sheet's parts go: a title bar, then rows of ``cols`` cells (a pad above each, a caption under
    it), then a pad. :func:`sheet_bands` draws it a band at a time; :func:`contact_sheet` as one image."""

    CAPTION, PAD, TITLE = 14, 4, 22

    def __init__(self, n: int, cell: int = 128, cols: int | None = None, title: str = ""):
        n = max(1, n)
        self.n, self.cell, self.title = n, cell, title
        self.cols = cols or max(1, min(n, math.ceil(math.sqrt(n))))
        self.rows = math.ceil(n / self.cols)
        self.title_h = self.TITLE if title else 0
        self.band_h = self.PAD + cell + self.CAPTION
        self.width = self.cols * (cell + self.PAD) + self.PAD
        self.height = self.title_h + self.rows * self.band_h + self.PAD


def sheet_bands(cells: Iterable[tuple[Image.Image | None, str]], layout: SheetLayout,
                background: Sequence[int] = (40, 40, 40)) -> Iterator[Image.Image]:
    """The contact sheet of ``layout`` as horizontal bands, top to bottom: the title bar, a band a row of cells,
    the bottom pad. ``cells`` is read a row at a time, so a sheet of any size takes one band's memory (the cells
    may be made as they are read). ``(None, caption)`` draws a crossed cell (an image that could not be shown);
    ``(None, "")`` leaves the cell blank (padding)."""
    bg, pad, cell = tuple(background[:3]), layout.PAD, layout.cell
    small = _font(10)
    if layout.title_h:
        band = Image.new("RGB", (layout.width, layout.title_h), bg)
        ImageDraw.Draw(band).text((pad, 4), layout.title, fill=(235, 235, 235), font=_font(14))
        yield band
    it = iter(cells)
    for _ in range(layout.rows):
        band = Image.new("RGB", (layout.width, layout.band_h), bg)
        draw = ImageDraw.Draw(band)
        for col, (im, caption) in enumerate(itertools.islice(it, layout.cols)):
            x, y = pad + col * (cell + pad), pad
            if im is None and not caption:
                continue
            if im is None:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline=(200, 60, 60))
                draw.line((x, y, x + cell - 1, y + cell - 1), fill=(200, 60, 60))
            else:
                thumb = ImageOps.contain(to_rgb(im), (cell, cell), Image.Resampling.LANCZOS)
                band.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
            text = caption
            while text and draw.textlength(text, font=small) > cell:
                text = text[:-1]
            draw.text((x, y + cell + 1), text, fill=(210, 210, 210), font=small)
        yield band
    yield Image.new("RGB", (layout.width, pad), bg)


def contact_sheet(
    cells: Sequence[tuple[Image.Image | None, str]],
    cell: int = 128,
    cols: int | None = None,
    title: str = "",
    background: Sequence[int] = (40, 40, 40),
) -> Image.Image:
    """A grid of thumbnails with a caption under each and a title bar, as one image (:func:`sheet_bands`)."""
    layout = SheetLayout(len(cells), cell, cols, title)
    sheet = Image.new("RGB", (layout.width, layout.height))
    y = 0
    for band in sheet_bands(cells, layout, background):
        sheet.paste(band, (0, y))
        y += band.height
    return sheet


def write_png(f: IO[bytes], width: int, height: int, bands: Iterable[Image.Image]) -> None:
    """An RGB PNG of ``width`` × ``height`` written to ``f`` from horizontal bands as they come (their heights
    adding up to ``height``): memory for one band, whatever the image's size. Each row takes the filter (None, Sub
    or Up) whose bytes are smallest as signed values (libpng's heuristic); zlib at Pillow's level 6."""

    def chunk(kind: bytes, data: bytes) -> None:
        f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))

    f.write(b"\x89PNG\r\n\x1a\n")
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    z = zlib.compressobj(6)
    rows, above = 0, np.zeros((1, width * 3), np.uint8)  # the row above the first is zeros (PNG's rule)
    step = max(1, (1 << 20) // (width * 3))  # rows filtered at a time: a few MB of work arrays
    for band in bands:
        pixels = np.asarray(to_rgb(band), dtype=np.uint8).reshape(band.height, width * 3)
        rows += band.height
        for i in range(0, band.height, step):
            a = pixels[i:i + step]
            sub = a.copy()
            np.subtract(a[:, 3:], a[:, :-3], out=sub[:, 3:])  # wraps modulo 256, as PNG's filters do
            choices = np.stack([a, sub, a - np.concatenate([above, a[:-1]])])  # filter types None, Sub, Up
            above = a[-1:].copy()
            cost = np.minimum(choices, 0 - choices).sum(axis=2, dtype=np.int64)  # |byte| as a signed value
            kind = cost.argmin(axis=0)
            out = np.empty((len(a), width * 3 + 1), np.uint8)
            out[:, 0] = kind
            out[:, 1:] = choices[kind, np.arange(len(a))]
            data = z.compress(out.tobytes())
            if data:
                chunk(b"IDAT", data)
    if rows != height:
        raise ValueError(f"the bands hold {rows} rows, not {height}")
    chunk(b"IDAT", z.flush())
    chunk(b"IEND", b"")
