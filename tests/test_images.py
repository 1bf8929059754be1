"""images.py: decoding with limits, RGB normalisation, resize modes and filters, encoding."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import drawn_image, png_bytes
from PIL import Image

from gandata import images
from gandata.images import ImageError


def test_real_images_decode(anime_dir):
    for p in sorted(anime_dir.glob("*.jpg")):
        im = images.decode(p.read_bytes())
        assert im.size == (512, 512) and images.to_rgb(im).mode == "RGB"
        assert images.probe(p.read_bytes()) == ("jpeg", 512, 512)


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"", "empty body"),
        (b"<!DOCTYPE html><html><body>Quota Exceeded</body></html>", "HTML page"),
        (b"  <html><head><title>404</title></head></html>", "HTML page"),
        (b'{"error": "not found"}', "JSON"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (b"GARBAGE BYTES", "not an image"),
    ],
)
def test_non_images_are_refused_with_a_reason(body, reason):
    with pytest.raises(ImageError, match=reason):
        images.decode(body)


def test_truncated_bodies_are_refused(images12):
    data = (images12 / "tadne_r0c1.jpg").read_bytes()
    with pytest.raises(ImageError, match="truncated"):
        images.decode(data[: len(data) // 2])
    png = png_bytes(drawn_image(1, (200, 200)))
    with pytest.raises(ImageError, match="truncated|corrupt"):
        images.decode(png[: len(png) - 40])


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def test_decompression_bomb_is_refused_before_decoding():
    # a PNG claiming 40000 × 40000 pixels (1.6 Gpx) in a few hundred bytes
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + _chunk(b"IEND", b"")
    )
    with pytest.raises(ImageError, match="bomb"):
        images.decode(bomb)
    with pytest.raises(ImageError, match="over the 1 Mpx limit"):
        images.decode(png_bytes(drawn_image(0, (1200, 1000))), max_pixels=1_000_000)


def test_alpha_is_composited_onto_the_background():
    rgba = Image.new("RGBA", (4, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 255, 0))  # fully transparent blue
    rgba.putpixel((2, 0), (0, 0, 0, 128))  # half transparent black
    out = images.to_rgb(images.decode(png_bytes(rgba)))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((1, 0)) == (255, 255, 255)  # white by default
    assert all(abs(c - 127) <= 1 for c in out.getpixel((2, 0)))
    black = images.to_rgb(rgba, background=(0, 0, 0))
    assert black.getpixel((1, 0)) == (0, 0, 0)


def test_palette_la_grey_and_16_bit_become_rgb():
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0
    out = images.to_rgb(images.decode(png_bytes(p)))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (200, 100, 50)
    la = Image.new("LA", (1, 1), (80, 0))
    assert images.to_rgb(la).getpixel((0, 0)) == (255, 255, 255)
    grey = Image.new("L", (1, 1), 80)
    assert images.to_rgb(grey).getpixel((0, 0)) == (80, 80, 80)
    deep = Image.fromarray(np.full((1, 1), 65535, dtype=np.uint16))
    assert images.to_rgb(deep).getpixel((0, 0)) == (255, 255, 255)
    cmyk = Image.new("CMYK", (1, 1), (0, 0, 0, 0))
    assert images.to_rgb(cmyk).getpixel((0, 0)) == (255, 255, 255)


def _striped(w: int, h: int) -> Image.Image:
    """Red left third, green middle, blue right third."""
    im = Image.new("RGB", (w, h), (0, 255, 0))
    im.paste((255, 0, 0), (0, 0, w // 3, h))
    im.paste((0, 0, 255), (w - w // 3, 0, w, h))
    return im


def test_center_crop_keeps_the_middle():
    out = images.resize(_striped(300, 100), 64, "center-crop")
    assert out.size == (64, 64)
    assert out.getpixel((32, 32)) == (0, 255, 0)
    assert out.getpixel((0, 32)) == (0, 255, 0) and out.getpixel((63, 32)) == (0, 255, 0)


def test_pad_keeps_everything_and_uses_the_pad_colour():
    out = images.resize(_striped(300, 100), 60, "pad", pad_color=(10, 20, 30))
    assert out.size == (60, 60)
    assert out.getpixel((30, 0)) == (10, 20, 30) and out.getpixel((30, 59)) == (10, 20, 30)
    assert out.getpixel((1, 30))[0] > 200 and out.getpixel((58, 30))[2] > 200  # red and blue both survive


def test_keep_ratio_sets_the_smallest_side():
    assert images.resize(_striped(300, 200), 64, "keep-ratio").size == (96, 64)
    assert images.resize(_striped(50, 100), 64, "keep-ratio").size == (64, 128)
    with pytest.raises(ValueError, match="unknown resize mode"):
        images.resize(_striped(50, 100), 64, "stretch")


def test_box_filter_when_shrinking_lanczos_when_enlarging():
    src = drawn_image(3, (256, 256))
    down = images.resize(src, 64, "center-crop")
    assert down.tobytes() == src.resize((64, 64), Image.Resampling.BOX).tobytes()
    # area averaging: each output pixel is the mean of its 4×4 block
    block = np.asarray(src, dtype=np.float64)[:4, :4].mean(axis=(0, 1))
    assert np.abs(np.asarray(down, dtype=np.float64)[0, 0] - block).max() <= 1
    up = images.resize(drawn_image(4, (32, 32)), 64, "center-crop")
    assert up.tobytes() == drawn_image(4, (32, 32)).resize((64, 64), Image.Resampling.LANCZOS).tobytes()


@pytest.mark.parametrize("fmt, magic", [("png", "png"), ("jpg", "jpeg"), ("webp", "webp")])
def test_encode_round_trips_and_is_deterministic(fmt, magic):
    im = drawn_image(5, (64, 64))
    data = images.encode(im, fmt)
    assert images.sniff(data) == magic
    assert images.encode(im, fmt) == data
    back = images.decode(data)
    assert back.size == (64, 64)
    if fmt == "png":
        assert back.tobytes() == im.tobytes()
    with pytest.raises(ValueError, match="unknown image format"):
        images.encode(im, "gif")


def test_pixel_digest_ignores_the_encoding(images12):
    jpg = images.to_rgb(images.decode((images12 / "tadne_r0c1.jpg").read_bytes()))
    as_png = images.to_rgb(images.decode(images.encode(jpg, "png")))
    assert images.pixel_digest(jpg) == images.pixel_digest(as_png)
    other = images.to_rgb(images.decode((images12 / "tadne_r0c2.jpg").read_bytes()))
    assert images.pixel_digest(other) != images.pixel_digest(jpg)


def test_a_colour_is_parsed_once_and_keeps_its_text():
    import copy
    import json
    import pickle

    from gandata.options import Color

    assert Color.parse("white").rgb == (255, 255, 255)
    assert Color.parse("#102030").rgb == (16, 32, 48)
    c = Color.parse("1,2,3")
    assert c.rgb == (1, 2, 3) and c == "1,2,3" and json.dumps({"c": c}) == '{"c": "1,2,3"}'
    assert Color.parse(c) is c  # a checked colour is not parsed again
    assert copy.deepcopy(c).rgb == pickle.loads(pickle.dumps(c)).rgb == (1, 2, 3)
    for bad in ("nocolour", "1,2", "300,0,0", "a,b,c"):
        with pytest.raises(ValueError):
            Color.parse(bad)


def test_contact_sheet_lays_out_cells():
    cells = [(drawn_image(i, (40, 30)), f"k{i}") for i in range(5)] + [(None, "bad")]
    sheet = images.contact_sheet(cells, cell=50, title="t")
    assert sheet.mode == "RGB"
    assert sheet.width == 3 * 54 + 4  # 6 cells → 3 columns
    buf = io.BytesIO()
    sheet.save(buf, "PNG")
    assert images.decode(buf.getvalue()).size == sheet.size


@pytest.mark.parametrize("cell, cols, title", [(16, None, ""), (50, 8, "a title"), (97, 3, "t" * 400), (64, 1, "")])
def test_a_sheet_written_in_bands_is_the_sheet(cell, cols, title):
    """write_png over sheet_bands (what inspect --grid writes, a band at a time) decodes to exactly the pixels of
    contact_sheet: odd sizes, crossed and blank cells, long captions and titles, one column; the bands' heights
    must add up to the declared height."""
    rng = np.random.default_rng(cell)
    cells = [(Image.fromarray(rng.integers(0, 256, (int(rng.integers(3, 120)), int(rng.integers(3, 120)), 3),
                                           dtype=np.uint8)), f"gjpq caption {i} " * 4) for i in range(11)]
    cells[2], cells[7] = (None, "bad k2"), (None, "")
    sheet = images.contact_sheet(cells, cell=cell, cols=cols, title=title)
    layout = images.SheetLayout(len(cells), cell, cols, title)
    assert (layout.width, layout.height) == sheet.size
    buf = io.BytesIO()
    images.write_png(buf, layout.width, layout.height, images.sheet_bands(iter(cells), layout))
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), np.asarray(sheet))
    with pytest.raises(ValueError, match="rows"):
        images.write_png(io.BytesIO(), layout.width, layout.height + 1, images.sheet_bands(cells, layout))
