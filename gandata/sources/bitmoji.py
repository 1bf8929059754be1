"""Bitmoji avatars: random avatars from the trait preview, or catalogue comics for given avatar ids.

Both images are Bitmoji artwork, for research use only: keep them local and do not redistribute them.

* ``avatars`` (default): each sample is a new avatar composed by drawing one option per trait category of the
  trait catalogue (libmoji's method), with a per-category chance of "none" for optional features (hats, glasses,
  beards…) so that they do not appear on every face, and a random outfit. The key is a hash of every parameter,
  so the same avatar is never fetched twice, whatever the seed.
* ``comics``: catalogue templates × avatar ids the user gives; each id is substituted into the template's ``src``
  (so host changes in the catalogue are followed for free).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import assets
from ..datasets import Dataset, hash_key
from ..declarations import FETCH_BITMOJI
from ..errors import UserError, hint, named
from ..fetch import FetchSummary, Job, describe_run, fetch, rebase
from ..textfiles import decode_text, read_text
from . import Source

_DEFAULT = FETCH_BITMOJI.defaults()

GENDERS = {"male": 1, "female": 2}
STYLES = {"bitstrips": 1, "bitmoji": 4, "cm": 5}
VIEWS = ("head", "body")
MODES = ("avatars", "comics")


def _json_with(data: bytes, key: str, kind: type) -> dict:
    """A JSON object holding ``key`` of type ``kind``; ValueError with the reason otherwise."""
    text = decode_text(data)
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
        raise ValueError(f"no {key!r} {'object' if kind is dict else 'list'}")
    return obj


@dataclass
class TraitCatalogue:
    """The avatar-builder asset catalogue: options per (gender, style) and category, and outfits per gender."""

    categories: dict[tuple[int, int], dict[str, list[int]]]
    outfits: dict[int, list[list[int]]]  # gender → brands → outfit ids

    @classmethod
    def parse(cls, data: bytes) -> TraitCatalogue:
        obj = _json_with(data, "traits", dict)
        categories: dict[tuple[int, int], dict[str, list[int]]] = {}
        for gname, gid in GENDERS.items():
            for sname, sid in STYLES.items():
                cats = (obj["traits"].get(gname) or {}).get(sname, {}).get("categories")
                if not cats:
                    continue
                table = {}
                for c in cats:
                    values = [o["value"] for o in c.get("options", []) if isinstance(o.get("value"), int)]
                    if values:
                        table[str(c["key"])] = values
                if table:
                    categories[(gid, sid)] = table
        if not categories:
            raise ValueError("no trait categories for any gender and style")
        outfits: dict[int, list[list[int]]] = {}
        for gname, gid in GENDERS.items():
            brands = ((obj.get("outfits") or {}).get(gname) or {}).get("brands") or []
            ids = [[o["id"] for o in b.get("outfits", []) if isinstance(o.get("id"), int)] for b in brands]
            outfits[gid] = [b for b in ids if b]
        return cls(categories, outfits)

    def draw(self, rng: random.Random, genders: list[int], styles: list[int], none: dict[str, float]) -> dict:
        """One random avatar: gender, style, one value per category, outfit."""
        choices = [(g, s) for g in genders for s in styles if (g, s) in self.categories]
        if not choices:
            raise UserError(f"the trait catalogue has no traits for genders {genders} and styles {styles}; "
                            "change [avatars] in the bitmoji manifest")
        gender = rng.choice(sorted({g for g, _ in choices}))
        style = rng.choice([s for g, s in choices if g == gender])
        traits = {}
        for key, values in sorted(self.categories[(gender, style)].items()):
            p_none = none.get(key)
            if p_none is not None and -1 in values and len(values) > 1:
                traits[key] = -1 if rng.random() < p_none else rng.choice([v for v in values if v != -1])
            else:
                traits[key] = rng.choice(values)
        brands = self.outfits.get(gender) or []
        outfit = rng.choice(rng.choice(brands)) if brands else None
        return {"gender": gender, "style": style, "traits": traits, "outfit": outfit}


def parse_templates(data: bytes) -> list[dict]:
    """The single-avatar comics of a templates catalogue: ``[{comic_id, template_id, src, tags}]``."""
    obj = _json_with(data, "imoji", list)
    seen, out = set(), []
    for t in obj["imoji"]:
        src, comic = t.get("src"), str(t.get("comic_id", ""))
        if not isinstance(src, str) or src.count("%s") != 1 or not comic or comic in seen:
            continue
        seen.add(comic)
        out.append({"comic_id": comic, "template_id": str(t.get("template_id", "")), "src": src,
                    "tags": [str(x) for x in t.get("tags", []) if isinstance(x, (str, int))]})
    if not out:
        raise ValueError("no imoji entry with a comic_id and a src holding one %s")
    return out


def read_avatar_ids(path: str | os.PathLike) -> list[str]:
    """Avatar ids, one per line (``#`` comments and blank lines skipped)."""
    try:
        lines = read_text(path, named("avatar_ids", path)).split("\n")
    except OSError as e:
        raise UserError(f"cannot read {named('avatar_ids', path)} ({e.strerror})") from None
    ids = []
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if any(c.isspace() or c in "/?&%" for c in line):
            raise UserError(
                f"{named('avatar_ids', path)}, line {n}: {line!r} is not an avatar id (e.g. 280531978_2-s1 or a UUID)"
            )
        ids.append(line)
    if not ids:
        raise UserError(f"{named('avatar_ids', path)} holds no avatar ids; put one per line")
    return list(dict.fromkeys(ids))


def _with_query(url: str, extra: dict) -> str:
    if not extra:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({str(k): str(v) for k, v in extra.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


def avatar_jobs(cat: TraitCatalogue, manifest: dict, view: str, seed: int, base_url: str | None) -> Iterator[Job]:
    """An endless, seeded sequence of random-avatar jobs."""
    av = manifest.get("avatars", {})
    templates, scale = [av["url"], *av.get("fallback_urls", [])], av.get("scale", 1)
    genders, styles = list(av.get("genders", [1, 2])), list(av.get("styles", [5]))
    none = {str(k): float(v) for k, v in av.get("none", {}).items()}
    rng = random.Random(seed)
    draw = 0
    while True:
        a = cat.draw(rng, genders, styles, none)
        params = {"mode": "avatars", "view": view, "scale": scale, **a}
        traits = "&".join(f"{k}={v}" for k, v in a["traits"].items())
        urls = [rebase(t.format(view=view, scale=scale, gender=a["gender"], style=a["style"], outfit=a["outfit"],
                                traits=traits), base_url) for t in templates]
        record = {"mode": "avatars", "view": view, "gender": {1: "male", 2: "female"}[a["gender"]],
                  "gender_id": a["gender"], "style": a["style"], "scale": scale, "traits": a["traits"],
                  "outfit": a["outfit"], "seed": seed, "draw": draw}
        yield Job(hash_key("bitmoji", params), urls[0], record, fallbacks=urls[1:])
        draw += 1


def comic_jobs(templates: list[dict], avatar_ids: list[str], manifest: dict, seed: int,
               base_url: str | None) -> Iterator[Job]:
    """Every (template, avatar) pair once, in a seeded order that spreads comics and avatars."""
    query = manifest.get("comics", {}).get("query", {})
    n = len(templates) * len(avatar_ids)
    rng = random.Random(seed)
    step = rng.randrange(1, n) if n > 1 else 1
    while math.gcd(step, n) != 1:
        step = rng.randrange(1, n)
    offset = rng.randrange(n)
    for i in range(n):
        j = (offset + i * step) % n
        t, avatar = templates[j % len(templates)], avatar_ids[j // len(templates)]
        url = _with_query(t["src"].replace("%s", avatar), query)
        params = {"mode": "comics", "comic_id": t["comic_id"], "avatar": avatar, "query": query}
        record = {"mode": "comics", "comic_id": t["comic_id"], "template_id": t["template_id"], "avatar_id": avatar,
                  "tags": t["tags"]}
        yield Job(hash_key("bitmoji", params), rebase(url, base_url), record)


def fetch_bitmoji(
    out: str | os.PathLike,
    count: int,
    mode: str = _DEFAULT["mode"],
    view: str = _DEFAULT["view"],
    seed: int = _DEFAULT["seed"],
    traits: str | os.PathLike | None = None,
    templates: str | os.PathLike | None = None,
    avatar_ids: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    base_url: str | None = None,
    overrides: dict | None = None,
    progress: bool = False,
) -> FetchSummary:
    """Fetch Bitmoji images into the dataset folder ``out`` until it holds ``count`` distinct images.

    ``overrides`` replaces the manifest's politeness settings (FetchOptions fields, e.g. ``{"rate": 2.0}``)."""
    src = Source.open("bitmoji", manifest, base_url, overrides, count=count, mode=mode, view=view, seed=seed)
    manifest, opts = src.manifest, src.engine
    provenance: dict = {"manifest": src.manifest_path}
    if mode == "avatars":
        catalogue, provenance["traits"] = assets.asset(
            "Bitmoji trait catalogue", rebase(manifest["catalogues"]["traits"], base_url), "traits", traits,
            parse=TraitCatalogue.parse)
        jobs: Iterator[Job] = avatar_jobs(catalogue, manifest, view, seed, base_url)
        possible = None
    else:
        if avatar_ids is None:
            raise UserError(f"{named('mode', 'comics')} needs {hint('avatar_ids', 'FILE')} (one Bitmoji avatar id per "
                            "line)")
        ids = read_avatar_ids(avatar_ids)
        templates, provenance["templates"] = assets.asset(
            "Bitmoji templates catalogue", rebase(manifest["catalogues"]["templates"], base_url), "templates",
            templates, parse=parse_templates)
        jobs = comic_jobs(templates, ids, manifest, seed, base_url)
        possible = len(templates) * len(ids)
    with Dataset.create(out, opts.durability) as ds:
        stats = fetch(ds, "bitmoji", jobs, target=count, options=opts, progress=progress, total_hint=possible)
        summary = describe_run(stats, "fetch bitmoji", out, provenance,
                     {"mode": mode, "view": view, "seed": seed, "count": count, "base_url": base_url})
        if possible is not None and not summary.complete and not summary.stopped:
            summary.stopped = (f"only {possible} comics × avatars exist and {summary.total} were fetched; "
                                f"give more {named('avatar_ids')} for a larger {named('count')}")
        ds.write_stats(summary.to_json())
    return summary

