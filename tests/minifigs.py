"""SYNTHETIC minifigure renders for the lego-faces tests: the demo's own drawing (``gandata.demo.draw_minifig``), not
real BrickLink images, and the same figure in the situations that broke the first locator on real images
(``scene``): a graded, grey or transparent background, a cape, long hair over the neck, a raised prop, a plume, a
white figure on white, an inset picture of a spare part, pale legs. Each returns the image and the whole head's
true box (x, y, w, h), marked as on real images (benchmarks/heads/README.md)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from gandata.demo import draw_minifig  # noqa: F401

VARIANTS = ("white", "grey", "gradient", "transparent", "cape", "long-hair", "prop", "plume", "white-on-white",
            "inset", "pale-legs")
SIZE = (300, 400)


def _geometry(box: tuple[int, int, int, int]) -> dict:
    """draw_minifig's layout from its whole-head box (no hat): unit, centre, head top, neck, torso."""
    x0, y0, w, _ = box
    u = w / 8
    hy0 = y0 + 2 * u
    neck = hy0 + 8.5 * u
    ty0 = neck + 1.2 * u
    return {"u": u, "cx": x0 + 4 * u, "top": y0, "hy0": hy0, "neck": neck, "ty0": ty0, "ty1": ty0 + 12 * u}


def _on(bg: Image.Image, fig: Image.Image) -> Image.Image:
    out = bg.convert("RGBA")
    out.alpha_composite(fig)
    return out.convert("RGB")


def scene(seed: int, variant: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
    fig, box = draw_minifig(seed, SIZE, scale=0.75 + 0.02 * (seed % 5), transparent=True)
    g = _geometry(box)
    u, cx = g["u"], g["cx"]
    W, H = SIZE
    white = Image.new("RGB", SIZE, (255, 255, 255))
    if variant == "white":
        return _on(white, fig), box
    if variant == "transparent":
        return fig, box
    if variant == "grey":
        noise = np.random.default_rng(seed).normal(0, 3, (H, W, 3))
        return _on(Image.fromarray(np.clip(200 + noise, 0, 255).astype(np.uint8)), fig), box
    if variant == "gradient":
        ramp = np.linspace(235, 140, H)[:, None, None] * np.ones((1, W, 3))
        return _on(Image.fromarray(ramp.astype(np.uint8)), fig), box
    if variant == "cape":  # a cape behind the figure, much wider than its shoulders
        back = white.copy()
        ImageDraw.Draw(back).polygon([(cx - 5 * u, g["ty0"]), (cx + 5 * u, g["ty0"]), (cx + 13 * u, g["ty1"] + 12 * u),
                                      (cx - 13 * u, g["ty1"] + 12 * u)], fill=(120, 20, 30))
        return _on(back, fig), box
    if variant == "long-hair":  # hair over the neck and shoulders: no narrowing between head and torso
        d = ImageDraw.Draw(fig)
        hair = (90, 50, 20, 255)
        d.rounded_rectangle((cx - 5 * u, g["top"] - 0.5 * u, cx + 5 * u, g["hy0"] + 2 * u), radius=2 * u, fill=hair)
        for side in (-1, 1):
            x = cx + side * 4.2 * u
            d.rectangle((min(x, x + side * 2.3 * u), g["hy0"], max(x, x + side * 2.3 * u), g["ty0"] + 4 * u), fill=hair)
        chin = g["neck"]
        return _on(white, fig), (int(round(cx - 6.5 * u)), int(round(g["top"] - 0.5 * u)), int(round(13 * u)),
                                 int(round(chin - (g["top"] - 0.5 * u))))
    if variant == "prop":  # a raised arm holds a banner above and beside the head
        d = ImageDraw.Draw(fig)
        d.rectangle((cx + 8 * u, g["top"] - 6 * u, cx + 8.6 * u, g["ty1"] - 3 * u), fill=(110, 70, 30, 255))
        d.rectangle((cx + 8.6 * u, g["top"] - 6 * u, cx + 14 * u, g["top"] - 1 * u), fill=(30, 90, 200, 255))
        return _on(white, fig), box
    if variant == "plume":  # a thin antenna with a ball on top of the head: not part of the head box
        d = ImageDraw.Draw(fig)
        d.rectangle((cx - 0.3 * u, g["top"] - 7 * u, cx + 0.3 * u, g["top"]), fill=(40, 40, 40, 255))
        d.ellipse((cx - 1 * u, g["top"] - 8.5 * u, cx + 1 * u, g["top"] - 6.5 * u), fill=(200, 30, 30, 255))
        return _on(white, fig), box
    if variant == "white-on-white":  # a white figure on white, seen only by its outline, shading and face print
        arr = np.asarray(fig).copy()
        opaque = arr[..., 3] > 0
        ink = arr[..., :3].max(axis=2) < 60
        arr[opaque & ~ink, :3] = 242
        arr[opaque & ~ink & (np.arange(W)[None, :] > cx), :3] = 228  # the shaded side
        outline = np.zeros_like(opaque)
        outline[1:, :] |= opaque[1:, :] != opaque[:-1, :]
        outline[:, 1:] |= opaque[:, 1:] != opaque[:, :-1]
        rgb = np.asarray(_on(white, Image.fromarray(arr, "RGBA"))).copy()
        rgb[outline] = 170
        return Image.fromarray(rgb), box
    if variant == "inset":  # a small picture of a spare head in the top-right corner, as BrickLink shows
        img = _on(white, fig)
        d = ImageDraw.Draw(img)
        d.rounded_rectangle((W - 62, 6, W - 12, 58), radius=8, fill=(250, 205, 30))
        d.ellipse((W - 50, 24, W - 44, 30), fill=(20, 20, 20))
        d.ellipse((W - 30, 24, W - 24, 30), fill=(20, 20, 20))
        return img, box
    if variant == "pale-legs":  # light grey legs on white
        arr = np.asarray(fig).copy()
        arr[int(g["ty1"]):, :, :3][arr[int(g["ty1"]):, :, 3] > 0] = (228, 228, 228)
        return _on(white, Image.fromarray(arr, "RGBA")), box
    raise ValueError(variant)

