"""SYNTHETIC minifigure renders for the lego-faces tests: drawn here, not real BrickLink images.

A front view on a plain background, as BrickLink's catalog renders are: a stud, a round-cornered yellow head with
eyes and a smile, optional hair or hat wider than the head, a neck, a trapezoid torso wider than the head, arms and
legs. `draw_minifig` returns the image and the head's true box (x, y, w, h)."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw


def draw_minifig(seed: int, size: tuple[int, int] = (300, 400), bg=(255, 255, 255), hat: bool = False,
                 scale: float = 1.0, transparent: bool = False) -> tuple[Image.Image, tuple[int, int, int, int]]:
    rng = random.Random(seed)
    W, H = size
    im = Image.new("RGBA" if transparent else "RGB", size, (0, 0, 0, 0) if transparent else bg)
    d = ImageDraw.Draw(im)
    u = 10 * scale  # one LEGO "unit" in pixels
    cx = W / 2 + rng.uniform(-0.1, 0.1) * W
    top = H * 0.1 + rng.uniform(-0.03, 0.03) * H
    torso_c = tuple(rng.randrange(40, 220) for _ in range(3))
    legs_c = tuple(rng.randrange(20, 200) for _ in range(3))
    yellow = (250, 205, 30)
    head_w, head_h = 8 * u, 8.5 * u
    hx0, hy0 = cx - head_w / 2, top + 2 * u
    d.rounded_rectangle((cx - 2.5 * u, top, cx + 2.5 * u, top + 2.2 * u), radius=u / 2, fill=yellow)  # stud
    d.rounded_rectangle((hx0, hy0, hx0 + head_w, hy0 + head_h), radius=2 * u, fill=yellow)
    d.ellipse((cx - 2.2 * u, hy0 + 3 * u, cx - 1.2 * u, hy0 + 4.2 * u), fill=(20, 20, 20))
    d.ellipse((cx + 1.2 * u, hy0 + 3 * u, cx + 2.2 * u, hy0 + 4.2 * u), fill=(20, 20, 20))
    d.arc((cx - 2.5 * u, hy0 + 4 * u, cx + 2.5 * u, hy0 + 6.5 * u), 20, 160, fill=(20, 20, 20), width=max(1, int(u / 3)))
    if hat:
        hat_c = tuple(rng.randrange(0, 120) for _ in range(3))
        d.rectangle((cx - 6 * u, hy0 - 0.5 * u, cx + 6 * u, hy0 + 1.2 * u), fill=hat_c)  # brim wider than the head
        d.rounded_rectangle((cx - 4.2 * u, top - 2 * u, cx + 4.2 * u, hy0 + 0.5 * u), radius=u, fill=hat_c)
    neck_y = hy0 + head_h
    d.rectangle((cx - 2.5 * u, neck_y, cx + 2.5 * u, neck_y + 1.2 * u), fill=yellow)
    ty0, ty1 = neck_y + 1.2 * u, neck_y + 1.2 * u + 12 * u
    d.polygon([(cx - 6 * u, ty0), (cx + 6 * u, ty0), (cx + 7.5 * u, ty1), (cx - 7.5 * u, ty1)], fill=torso_c)
    for side in (-1, 1):  # arms and hands
        ax = cx + side * 7 * u
        d.polygon([(ax, ty0 + u), (ax + side * 2.5 * u, ty0 + 2 * u), (ax + side * 3 * u, ty1 - 3 * u), (ax, ty1 - 2 * u)],
                  fill=torso_c)
        d.ellipse((ax + side * 2.8 * u - 1.2 * u, ty1 - 3.5 * u, ax + side * 2.8 * u + 1.2 * u, ty1 - 1.1 * u), fill=yellow)
    d.rectangle((cx - 7.5 * u, ty1, cx + 7.5 * u, ty1 + 2.5 * u), fill=legs_c)  # hips
    d.rectangle((cx - 7.5 * u, ty1 + 2.5 * u, cx - 0.4 * u, ty1 + 13 * u), fill=legs_c)
    d.rectangle((cx + 0.4 * u, ty1 + 2.5 * u, cx + 7.5 * u, ty1 + 13 * u), fill=legs_c)
    box = (int(round(hx0)), int(round(hy0)), int(round(head_w)), int(round(head_h)))
    return im, box
