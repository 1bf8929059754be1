"""``gandata demo``: the whole chain offline, on this machine (``cli.DEMO_TIME``: 1–20 min on 2 CPU cores).

A local render server on 127.0.0.1 stands in for the real sites, with their URL shapes: Bitmoji's trait catalogue
(``/avatar-builder-v3/assets``) and trait preview (``/bm-preview/v3/avatar/{view}?gender=…&style=…&{traits}``), and
BrickLink's item images (``/ItemImage/MN/0/{no}.png``). It draws its own cartoon avatars and minifigures — nothing
of Bitmoji's or LEGO's — deterministically from the request's parameters. Then two pipelines run through the real
code with ``base_url`` pointing at it: avatars (fetch → shard → train a small WGAN-GP → sample grid) and minifigures
(fetch from a catalog file → crop lego-faces → shard), and contact sheets of both shard sets are drawn.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from PIL import Image, ImageDraw

from . import images
from .fileio import atomic_write
from .localserver import LocalServer
from .summary import Summary

# ------------------------------------------------------------------------------------------------ drawings

SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 132), (198, 134, 92), (141, 85, 54), (96, 60, 40)]
HAIR = [(30, 25, 20), (90, 56, 30), (160, 110, 60), (230, 200, 120), (180, 60, 30), (140, 140, 150), (60, 90, 200)]
EYES = [(60, 40, 20), (40, 90, 160), (50, 120, 60), (90, 90, 90)]
CLOTH = [(200, 40, 50), (40, 90, 200), (40, 160, 90), (240, 180, 40), (120, 60, 160), (30, 30, 40)]
# trait categories of the demo catalogue: options (-1 = none) per category, as in Bitmoji's catalogue shape
TRAITS = {"skin_tone": list(range(len(SKIN))), "face_proportion": [0, 1, 2], "hair": list(range(6)),
          "hair_tone": list(range(len(HAIR))), "eye": [0, 1, 2], "pupil_tone": list(range(len(EYES))),
          "brow": [0, 1, 2], "mouth": [0, 1, 2, 3], "beard": [-1, 0, 1], "glasses": [-1, 0, 1], "hat": [-1, 0, 1, 2],
          "earring": [-1, 0]}
BEARDLESS = ("beard",)


def catalogue() -> dict:
    """The demo's trait catalogue, in the shape of Bitmoji's ``avatar-builder-v3/assets``."""
    cats = [{"key": k, "options": [{"value": v} for v in vals]} for k, vals in TRAITS.items()]
    no_beard = [{"key": c["key"], "options": c["options"] if c["key"] not in BEARDLESS else [{"value": -1}]}
                for c in cats]
    outfits = {"brands": [{"outfits": [{"id": 900 + i} for i in range(len(CLOTH))]}]}
    return {"traits": {"male": {"cm": {"categories": cats}}, "female": {"cm": {"categories": no_beard}}},
            "outfits": {"male": outfits, "female": outfits}}


def draw_avatar(q: dict, size: int = 128) -> Image.Image:
    """A cartoon head (``view=head``) or bust (``body``) on a transparent background, from the preview's query."""
    def t(key: str, default: int = 0) -> int:
        try:
            return int(q.get(key, default))
        except ValueError:
            return default

    body = q.get("view") == "body"
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    s = size / 128
    skin, hair = SKIN[t("skin_tone") % len(SKIN)], HAIR[t("hair_tone") % len(HAIR)]
    cx, cy = 64 * s, (52 if body else 66) * s
    fw = (36 + 4 * (t("face_proportion") % 3)) * s
    fh = (44 - 2 * (t("face_proportion") % 3)) * s * (0.8 if body else 1)
    if body:  # shoulders in the outfit's colour
        cloth = CLOTH[(t("outfit", 900) - 900) % len(CLOTH)]
        d.rounded_rectangle((cx - 46 * s, cy + fh * 0.9, cx + 46 * s, size + 10 * s), radius=22 * s, fill=cloth)
    style = t("hair") % 6
    if style in (2, 3):  # long hair behind the head
        d.rounded_rectangle((cx - fw - 6 * s, cy - fh, cx + fw + 6 * s, cy + fh * (0.9 if style == 2 else 0.5)),
                            radius=18 * s, fill=hair)
    d.ellipse((cx - fw - 5 * s, cy - 6 * s, cx - fw + 5 * s, cy + 10 * s), fill=skin)  # ears
    d.ellipse((cx + fw - 5 * s, cy - 6 * s, cx + fw + 5 * s, cy + 10 * s), fill=skin)
    d.ellipse((cx - fw, cy - fh, cx + fw, cy + fh), fill=skin)
    if style == 1:
        d.chord((cx - fw, cy - fh, cx + fw, cy + fh * 0.2), 180, 360, fill=hair)
    elif style in (2, 3):
        d.chord((cx - fw, cy - fh - 4 * s, cx + fw, cy), 180, 360, fill=hair)
    elif style == 4:  # spikes
        for i in range(7):
            x = cx - fw + i * fw / 3
            d.polygon([(x - 8 * s, cy - fh * 0.55), (x, cy - fh - 12 * s), (x + 8 * s, cy - fh * 0.55)], fill=hair)
    elif style == 5:  # bun
        d.ellipse((cx - 14 * s, cy - fh - 22 * s, cx + 14 * s, cy - fh + 4 * s), fill=hair)
        d.chord((cx - fw, cy - fh, cx + fw, cy), 180, 360, fill=hair)
    eye_y, gap = cy - 2 * s, 15 * s
    eye_c = EYES[t("pupil_tone") % len(EYES)]
    for side in (-1, 1):
        ex = cx + side * gap
        kind = t("eye") % 3
        if kind == 2:
            d.arc(
                (ex - 6 * s, eye_y - 4 * s, ex + 6 * s, eye_y + 4 * s),
                200,
                340,
                fill=(30, 30, 30),
                width=max(1, int(2 * s)),
            )
        else:
            rw, rh = (7 * s, 7 * s) if kind == 0 else (8 * s, 5 * s)
            d.ellipse((ex - rw, eye_y - rh, ex + rw, eye_y + rh), fill=(255, 255, 255))
            d.ellipse((ex - 3.5 * s, eye_y - 3.5 * s, ex + 3.5 * s, eye_y + 3.5 * s), fill=eye_c)
        by = eye_y - (11 + 2 * (t("brow") % 3)) * s
        d.line(
            (ex - 7 * s, by + (2 * s if t("brow") % 3 == 2 else 0), ex + 7 * s, by), fill=hair, width=max(1, int(3 * s))
        )
    mouth, my = t("mouth") % 4, cy + fh * 0.5
    if mouth == 0:
        d.arc((cx - 12 * s, my - 8 * s, cx + 12 * s, my + 4 * s), 20, 160, fill=(120, 30, 30), width=max(1, int(3 * s)))
    elif mouth == 1:
        d.chord((cx - 11 * s, my - 7 * s, cx + 11 * s, my + 7 * s), 0, 180, fill=(120, 30, 30))
    elif mouth == 2:
        d.line((cx - 9 * s, my, cx + 9 * s, my), fill=(120, 30, 30), width=max(1, int(3 * s)))
    else:
        d.ellipse((cx - 5 * s, my - 5 * s, cx + 5 * s, my + 5 * s), fill=(120, 30, 30))
    if t("beard", -1) >= 0:  # 0: full beard, 1: a beard with the mouth showing
        d.chord((cx - fw, cy - fh * 0.6, cx + fw, cy + fh), 20, 160, fill=hair)
        if t("beard") == 1:
            d.ellipse((cx - 12 * s, my - 6 * s, cx + 12 * s, my + 6 * s), fill=skin)
            d.line((cx - 8 * s, my, cx + 8 * s, my), fill=(120, 30, 30), width=max(1, int(3 * s)))
    if t("glasses", -1) >= 0:
        frame = (20, 20, 20) if t("glasses") == 0 else (180, 40, 40)
        for side in (-1, 1):
            ex = cx + side * gap
            box = (ex - 10 * s, eye_y - 8 * s, ex + 10 * s, eye_y + 8 * s)
            (d.ellipse if t("glasses") == 0 else d.rectangle)(box, outline=frame, width=max(1, int(2 * s)))
        d.line((cx - 5 * s, eye_y, cx + 5 * s, eye_y), fill=frame, width=max(1, int(2 * s)))
    hat = t("hat", -1)
    if hat >= 0:
        colour = CLOTH[(hat * 2 + t("skin_tone")) % len(CLOTH)]
        if hat == 0:  # cap
            d.chord((cx - fw - 2 * s, cy - fh - 6 * s, cx + fw + 2 * s, cy - fh * 0.1), 180, 360, fill=colour)
            d.rectangle((cx, cy - fh * 0.45, cx + fw + 16 * s, cy - fh * 0.3), fill=colour)
        elif hat == 1:  # beanie
            d.rounded_rectangle((cx - fw - 2 * s, cy - fh - 10 * s, cx + fw + 2 * s, cy - fh * 0.35), radius=14 * s,
                                fill=colour)
        else:  # top hat
            d.rectangle((cx - fw - 10 * s, cy - fh * 0.62, cx + fw + 10 * s, cy - fh * 0.5), fill=(25, 25, 25))
            d.rectangle((cx - fw * 0.7, cy - fh - 26 * s, cx + fw * 0.7, cy - fh * 0.6), fill=(25, 25, 25))
    return im


def draw_minifig(seed: int, size: tuple[int, int] = (300, 400), bg=(255, 255, 255), hat: bool = False,
                 scale: float = 1.0, transparent: bool = False) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A minifigure front view on a plain background, as BrickLink's catalog renders are: a stud, a round-cornered
    yellow head with eyes and a smile, an optional hat wider than the head, a neck, a trapezoid torso, arms and
    legs. Returns the image and the whole head's true box (x, y, w, h): stud, hat and brim included, as a head is
    marked on real images (benchmarks/heads/README.md)."""
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
    _face_print(d, random.Random(seed * 7919 + 1), cx, hy0, u)
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
        d.polygon(
            [(ax, ty0 + u), (ax + side * 2.5 * u, ty0 + 2 * u), (ax + side * 3 * u, ty1 - 3 * u), (ax, ty1 - 2 * u)],
            fill=torso_c,
        )
        d.ellipse(
            (ax + side * 2.8 * u - 1.2 * u, ty1 - 3.5 * u, ax + side * 2.8 * u + 1.2 * u, ty1 - 1.1 * u), fill=yellow
        )
    d.rectangle((cx - 7.5 * u, ty1, cx + 7.5 * u, ty1 + 2.5 * u), fill=legs_c)  # hips
    d.rectangle((cx - 7.5 * u, ty1 + 2.5 * u, cx - 0.4 * u, ty1 + 13 * u), fill=legs_c)
    d.rectangle((cx + 0.4 * u, ty1 + 2.5 * u, cx + 7.5 * u, ty1 + 13 * u), fill=legs_c)
    x0, y0 = (cx - 6 * u, top - 2 * u) if hat else (hx0, top)
    box = (int(round(x0)), int(round(y0)), int(round(cx + (cx - x0) - x0)), int(round(hy0 + head_h - y0)))
    return im, box


def _face_print(d: ImageDraw.ImageDraw, rng: random.Random, cx: float, hy0: float, u: float) -> None:
    """One of many printed faces: eyes, brows, mouth, and sometimes glasses or a beard (inside the head)."""
    ink, w = (20, 20, 20), max(1, int(u / 3))
    big = rng.random() < 0.3
    for side in (-1, 1):
        ex = cx + side * 1.7 * u
        r = 0.7 * u if big else 0.5 * u
        d.ellipse((ex - r, hy0 + 3.6 * u - r, ex + r, hy0 + 3.6 * u + r), fill=ink)
        if big:
            d.ellipse((ex - 0.2 * u, hy0 + 3.3 * u, ex + 0.1 * u, hy0 + 3.6 * u), fill=(200, 200, 200))
        if rng.random() < 0.6:  # brows, level or angry
            tilt = side * rng.choice([0, 0.6])
            d.line((ex - 0.9 * u, hy0 + 2.4 * u - tilt * u, ex + 0.9 * u, hy0 + 2.4 * u + tilt * u), fill=ink, width=w)
    mouth = rng.randrange(4)
    if mouth == 0:
        d.arc((cx - 2.5 * u, hy0 + 4 * u, cx + 2.5 * u, hy0 + 6.5 * u), 20, 160, fill=ink, width=w)
    elif mouth == 1:  # open grin
        d.chord((cx - 2.2 * u, hy0 + 4.6 * u, cx + 2.2 * u, hy0 + 6.8 * u), 0, 180, fill=ink)
        d.rectangle((cx - 1.6 * u, hy0 + 5.7 * u, cx + 1.6 * u, hy0 + 6.0 * u), fill=(200, 200, 200))
    elif mouth == 2:  # frown
        d.arc((cx - 2 * u, hy0 + 5.6 * u, cx + 2 * u, hy0 + 7.4 * u), 200, 340, fill=ink, width=w)
    else:  # smirk
        d.line((cx - 1.8 * u, hy0 + 6 * u, cx + 1.8 * u, hy0 + 5.4 * u), fill=ink, width=w)
    if rng.random() < 0.25:  # glasses
        for side in (-1, 1):
            ex = cx + side * 1.7 * u
            d.rectangle((ex - 1.1 * u, hy0 + 2.9 * u, ex + 1.1 * u, hy0 + 4.3 * u), outline=ink, width=w)


def _png(im: Image.Image) -> bytes:
    return images.encode(im, "png")


# ------------------------------------------------------------------------------------------------- server

DEMO_CATEGORIES = [(65, "Castle"), (746, "Space"), (67, "Town"), (60, "Pirates")]


class DemoServer(LocalServer):
    """The render server, on an ephemeral port of 127.0.0.1 in a background thread (``with DemoServer() as s``)."""

    def __init__(self) -> None:
        self.requests = 0
        super().__init__([("GET", "/avatar-builder-v3/assets", self._catalogue),
                          ("GET", "/bm-preview/v3/avatar/{view}", self._avatar),
                          ("GET", "/ItemImage/MN/0/{name}", self._minifig)], name="demo-server")

    async def _catalogue(self, request):
        from aiohttp import web

        self.requests += 1
        return web.json_response(catalogue())

    async def _avatar(self, request):
        from aiohttp import web

        self.requests += 1
        q = dict(parse_qsl(request.query_string))
        q["view"] = request.match_info["view"]
        body = await asyncio.get_running_loop().run_in_executor(None, lambda: _png(draw_avatar(q)))
        return web.Response(body=body, content_type="image/png")

    async def _minifig(self, request):
        from aiohttp import web

        self.requests += 1
        name = request.match_info["name"]
        no = name.rsplit(".", 1)[0]
        seed = int.from_bytes(hashlib.sha256(no.encode()).digest()[:4], "little")
        hat = no.startswith(("cas", "pi"))
        body = await asyncio.get_running_loop().run_in_executor(
            None, lambda: _png(draw_minifig(seed, (240, 320), hat=hat, scale=0.8)[0]))
        return web.Response(body=body, content_type="image/png")


def catalog_file(n: int) -> str:
    """A BrickLink minifig catalog download (tab-separated) listing ``n`` demo figures over four categories."""
    prefixes = {65: "cas", 746: "sp", 67: "twn", 60: "pi"}
    lines = ["Category ID\tCategory Name\tNumber\tName\tYear Released\tWeight (in Grams)"]
    for i in range(n):
        cid, cname = DEMO_CATEGORIES[i % len(DEMO_CATEGORIES)]
        lines.append(f"{cid}\t{cname}\t{prefixes[cid]}{i // len(DEMO_CATEGORIES) + 1:03d}\tDemo {cname} figure "
                     f"{i + 1}\t{1990 + i % 30}\t3.5")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- demo

SIZES = {
    # avatars fetched, minifigures fetched, training length (kimg), snapshot interval
    "full": {"avatars": 400, "minifigs": 120, "kimg": 60.0, "snap": 30.0},
    "small": {"avatars": 48, "minifigs": 24, "kimg": 0.2, "snap": 0.1},
}


def pipelines(out: Path, base_url: str, size: str) -> tuple[dict, dict]:
    """The two pipelines the demo runs (the same tables a pipeline file holds)."""
    z = SIZES[size]
    avatars = {
        "pipeline": {"name": "avatars", "dataset": "bitmoji", "base_url": base_url, "allow_outside": True},
        # the trait catalogue from a file the demo writes: a download from the server (a new port each run) would
        # leave a new copy in the user's cache at every run
        "fetch": {"source": "bitmoji", "count": z["avatars"], "rate": 0, "concurrency": 16,
                  "traits": str(out / "avatar-traits.json")},
        # exact duplicates only: faces drawn on one template are close in a perceptual hash (docs/commands.md, dedupe)
        "shard": {"size": 32, "dedupe": "exact", "val_fraction": 0.05, "maxcount": 64, "min_shards": 1},
        # dcgan: at equal time it draws the avatars' white background and faces where wgan-gp (90 kimg) was still
        # grey (border median 226 against 172; the reals are 255) — and in 60 kimg, half the time
        "train": {"kind": "dcgan", "out": str(out / "runs" / "avatars-dcgan"), "kimg": z["kimg"],
                  "snap_kimg": z["snap"], "log_kimg": z["snap"] / 2, "ngf": 32, "ndf": 32, "nz": 64,
                  "workers": 0, "shuffle": 256, "device": "cpu", "ema_kimg": 1.0},
    }
    minifigs = {
        "pipeline": {"name": "minifigs", "dataset": "bricklink", "base_url": base_url, "allow_outside": True},
        "fetch": {"source": "bricklink", "catalog_file": str(out / "minifigs-catalog.txt"), "concurrency": 8,
                  "rate": 0},
        "crop": {"kind": "lego-faces", "size": 64, "debug_grid": str(out / "minifig-heads.png")},
        "shard": {"size": 32, "dedupe": "near", "threshold": 3, "label_field": "category", "val_fraction": 0.0,
                  "min_shards": 1},
    }
    return avatars, minifigs


@dataclass
class DemoResult(Summary):
    out: str
    size: str
    avatars: Summary  # the avatars pipeline's result
    minifigs: Summary
    requests: int  # HTTP requests the local render server answered
    samples: str  # the trained generator's sample grid
    sheets: dict[str, str]  # contact sheet of each shard set
    heads: str  # the minifig crops' detection sheet
    summary: str  # demo-summary.json

    def lines(self) -> list[str]:
        """One line per item (an empty one for a gap): each is shown on its own, its control characters escaped
        (:func:`gandata.terminal.shown`), so none holds a line break."""
        out = ["", f"demo done ({self.requests} HTTP requests to the local render server); everything is in "
                   f"{self.out}:"]
        for part in ("avatars", "minifigs"):
            for s in getattr(self, part).stages:
                out += [f"  {part:<8} {s.stage:<6} {s.line}", f"  {'':<16}→ {s.out}"]
                out += [f"  {'':<16}warning: {w}" for w in s.warnings]
        files = [("sample grid from the trained generator", self.samples),
                 *[(f"contact sheet of the {name} shards", sheet) for name, sheet in self.sheets.items()],
                 ("minifig heads found (boxes drawn)", self.heads), ("this summary as JSON", self.summary)]
        width = max(len(what) for what, _ in files) + 1
        out += [f"  {what + ':':<{width}} {where}" for what, where in files]
        out += ["", "Next: the real commands (docs/commands.md); pipelines/*.toml build the full-size datasets."]
        return out

    def brief(self) -> str:
        return f"demo done: {self.out}"


def demo(out: str | Path = "gandata-demo", size: str = "full", progress: bool = True, echo=print) -> DemoResult:
    """Run the offline demo into ``out``; returns what each stage produced and where."""
    from . import pipeline
    from .inspection import inspect_path
    from .trainers.sampling import sample

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    atomic_write(out / "minifigs-catalog.txt", catalog_file(SIZES[size]["minifigs"]).encode())
    atomic_write(out / "avatar-traits.json", json.dumps(catalogue()).encode())
    with DemoServer() as server:
        echo(f"demo render server on {server.url} (Bitmoji and BrickLink URL shapes, our own drawings)")
        avatars, minifigs = pipelines(out, server.url, size)
        avatars_result = pipeline.run(avatars, data_dir=data, progress=progress, echo=echo)
        minifigs_result = pipeline.run(minifigs, data_dir=data, progress=progress, echo=echo)
        requests = server.requests
    samples = sample(Path(avatars["train"]["out"]), n=64, out=out / "avatars-samples.png", device="cpu").out
    sheets = {}
    for name in ("bitmoji", "bricklink"):
        sheet = out / f"{name}-shards-sheet.png"
        inspect_path(data / name / "shards", grid=sheet)
        sheets[name] = str(sheet)
    result = DemoResult(out=str(out), size=size, avatars=avatars_result, minifigs=minifigs_result, requests=requests,
                        samples=samples, sheets=sheets, heads=minifigs["crop"]["debug_grid"],
                        summary=str(out / "demo-summary.json"))
    atomic_write(out / "demo-summary.json", json.dumps(result.to_json(), default=str, indent=2).encode())
    return result
