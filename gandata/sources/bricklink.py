"""BrickLink minifigures, with names and categories as labels.

The item list comes from a catalog download file the user already has (``--catalog-file``, preferred: no
crawling at all) or from the catalog listing pages, crawled one at a time with a pause between them. Pages already
read are kept in the dataset's ``pages.jsonl`` journal, so a killed crawl neither reads them again nor loses their
items. Images come from the image host (main image first, then the other sizes), in parallel but capped.

BrickLink's throttle page ("Quota Exceeded", ``#blErrorTitle``) is recognised even with status 200 and waited
out; its browser challenge stops the run with a message saying what to do instead.
"""

from __future__ import annotations

import html as htmllib
import os
import re
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

from bs4 import BeautifulSoup

from ..datasets import Dataset, make_key
from ..errors import UserError, hint, named
from ..fetch import (
    Fetcher,
    FetchOptions,
    FetchSummary,
    Job,
    PageError,
    PageRetry,
    PageStop,
    describe_run,
    fetch,
    rebase,
)
from ..textfiles import read_text
from . import Source

SITE, IMAGES = "bricklink-site", "bricklink-images"
MAX_PAGES = 10_000  # a guard: the whole minifig catalogue is about 360 pages
_COUNT_RE = re.compile(r"([\d,]+)\s*Items Found\.?\s*Page\s*(\d+)\s*of\s*(\d+)", re.I)
_ITEM_HREF = re.compile(r"(?:catalogitem\.page|catalogItem\.asp)\?(?:[^\"'#]*&)?M=([^&#\"']+)", re.I)


# ------------------------------------------------------------------------------------------------- parsers


def _item(no: str, name: str, path: list[str], cat_id: int | None, cat_string: str | None,
          year: int | None = None, weight: float | None = None) -> dict:
    item = {"item_no": no.strip(), "name": htmllib.unescape(name).strip(), "category": path[0] if path else None,
            "category_path": " / ".join(path) if path else None, "category_id": cat_id, "cat_string": cat_string,
            "year": year, "weight_g": weight}
    return {k: v for k, v in item.items() if v is not None}


def parse_listing(page: str) -> dict:
    """A ``catalogList.asp`` page → ``{"items": [...], "total", "page", "pages"}`` (counts None when absent).

    Each item row has the item link (``catalogitem.page?M=…`` or the older ``catalogItem.asp?M=…``), the name in
    ``<strong>`` and the category path as ``catalogList.asp?…catString=…`` links."""
    soup = BeautifulSoup(page, "html.parser")
    items, seen = [], set()
    for a in soup.find_all("a", href=_ITEM_HREF):
        no = _ITEM_HREF.search(a["href"]).group(1)
        row = a.find_parent("tr")
        if row is None or no.lower() in seen or a.get_text(strip=True).lower() != no.lower():
            continue  # the image link and the "Inv" links repeat the number; the text link is the one
        seen.add(no.lower())
        strong = row.find("strong")
        path, cat_string = [], None
        for link in row.find_all("a", href=re.compile(r"catString=")):
            query = parse_qs(urlsplit(htmllib.unescape(link["href"])).query)
            if "catString" in query:
                path.append(link.get_text(strip=True))
                cat_string = query["catString"][0]
        top = int(cat_string.split(".")[0]) if cat_string and cat_string.split(".")[0].isdigit() else None
        items.append(_item(no, strong.get_text(" ", strip=True) if strong else "", path, top, cat_string))
    text = soup.get_text(" ", strip=True)
    m = _COUNT_RE.search(text)
    total, pg, pages = (int(m.group(1).replace(",", "")), int(m.group(2)), int(m.group(3))) if m else (None, None, None)
    return {"items": items, "total": total, "page": pg, "pages": pages}


def parse_categories_file(text: str) -> dict[int, str]:
    """A categories download (``Category ID⇥Category Name``) → {id: name}."""
    cats = {}
    for n, line in enumerate(text.split("\n")[1:], 2):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) < 2 or not parts[0].strip().isdigit():
            raise ValueError(f"line {n} is not 'Category ID<TAB>Category Name'")
        cats[int(parts[0])] = htmllib.unescape(parts[1].strip())
    return cats


def parse_catalog_file(text: str, categories: dict[int, str] | None = None) -> Iterator[dict]:
    """A minifig catalog download (tab-separated: Category ID, Category Name, Number, Name[, Year Released[, Weight]]).

    Blank lines are skipped, ``?`` years/weights become absent. ``Category Name`` is the path joined by `` / ``;
    with ``categories`` (a categories download) the path is also resolved to a dotted catString."""
    lines = text.split("\n")
    if not lines or not lines[0].lower().startswith("category id"):
        raise ValueError("the first line is not the header 'Category ID<TAB>Category Name<TAB>Number<TAB>Name…'")
    header = [h.strip().lower() for h in lines[0].split("\t")]
    col = {name: header.index(name) for name in header}
    for needed in ("category id", "category name", "number", "name"):
        if needed not in col:
            raise ValueError(f"no '{needed}' column in the header")
    by_name: dict[str, list[int]] = {}
    for cid, name in (categories or {}).items():
        by_name.setdefault(name, []).append(cid)
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.rstrip("\r").split("\t")]
        if len(parts) < 4:
            raise ValueError(f"line {n} has {len(parts)} columns, expected at least 4")
        top = int(parts[col["category id"]]) if parts[col["category id"]].isdigit() else None
        path = _split_path(htmllib.unescape(parts[col["category name"]]), by_name)
        cat_string = _resolve(top, path, by_name)
        year = weight = None
        if "year released" in col and col["year released"] < len(parts) and parts[col["year released"]].isdigit():
            year = int(parts[col["year released"]])
        wcol = next((i for h, i in col.items() if h.startswith("weight")), None)
        if wcol is not None and wcol < len(parts):
            try:
                weight = float(parts[wcol])
            except ValueError:
                weight = None
        yield _item(parts[col["number"]], parts[col["name"]], path, top, cat_string, year, weight)


def _split_path(name: str, by_name: dict[str, list[int]]) -> list[str]:
    """Split ``A / B / C`` into category names, keeping together pieces that are one known name with a `` / ``."""
    pieces, path, i = name.split(" / "), [], 0
    while i < len(pieces):
        for j in range(len(pieces), i, -1):
            candidate = " / ".join(pieces[i:j])
            if candidate in by_name or j == i + 1:
                path.append(candidate)
                i = j
                break
    return path


def _resolve(top: int | None, path: list[str], by_name: dict[str, list[int]]) -> str | None:
    if top is None:
        return None
    ids = [str(top)]
    for name in path[1:]:
        found = by_name.get(name, [])
        if len(found) != 1:
            return ids[0] if len(ids) == 1 else ".".join(ids)  # unknown or ambiguous: as deep as we are sure
        ids.append(str(found[0]))
    return ".".join(ids)


# ---------------------------------------------------------------------------------------------- the source


def _check_page(manifest: dict, throttle_wait: float):
    markers = manifest.get("markers", {})

    def check(text: str) -> None:
        if any(m in text for m in markers.get("challenge", [])):
            raise PageStop("BrickLink asked for a browser check, which gandata cannot pass; use "
                           f"{hint('catalog_file', 'Minifigures.txt')} (BrickLink's catalog download) or the "
                           "rebrickable source (gandata fetch rebrickable)")
        if any(m in text for m in markers.get("throttle", [])):
            raise PageRetry("throttled (Quota Exceeded page)", throttle_wait)

    return check


def _category_filter(spec: str | None) -> list[str] | None:
    if not spec:
        return None
    cats = [c.strip() for c in spec.split(",") if c.strip()]
    for c in cats:
        if not re.fullmatch(r"\d+(\.\d+)*", c):
            raise UserError(f"{named('categories', spec)}: give category ids or dotted catStrings, e.g. "
                            f"{hint('categories', '65,746')} or 65.257")
    return cats


def _matches(item: dict, cats: list[str]) -> bool:
    cs = item.get("cat_string") or str(item.get("category_id", ""))
    return any(cs == c or cs.startswith(c + ".") for c in cats)


def item_job(item: dict, manifest: dict, base_url: str | None, referer: str) -> Job:
    no = item["item_no"].lower()
    urls = [rebase(u.format(no=no), base_url) for u in manifest["images"]["urls"]]
    return Job(make_key("bricklink", no), urls[0], dict(item), fallbacks=urls[1:], headers={"Referer": referer},
               lane=IMAGES)


async def crawl_jobs(fetcher: Fetcher, ds: Dataset, manifest: dict, cats: list[str] | None, base_url: str | None,
                     throttle_wait: float, crawl: dict) -> AsyncIterator[Job]:
    """Read the listing pages (all minifigs, or each category) one at a time and yield a job per item.

    Pages already in the ``pages`` journal are not asked for again."""
    known = {(r["cat"], r["page"]): r for r in ds.read_journal("pages") if "cat" in r and "items" in r}
    journal = ds.journal("pages")
    check = _check_page(manifest, throttle_wait)
    site = manifest["site"]
    for cat in cats or [""]:
        seen: set[str] = set()
        page, pages, referer = 1, None, None
        while (pages is None or page <= pages) and page <= MAX_PAGES:
            rec = known.get((cat, page))
            if rec is None:
                url = rebase(site["list_url"].format(cat=cat, page=page) if cat else
                             site["list_all_url"].format(page=page), base_url)
                try:
                    text = await fetcher.page(url, lane=SITE, headers={"Referer": referer} if referer else None,
                                              check=check)
                except PageError as e:
                    crawl["page_failures"].append({"url": url, "error": str(e)})
                    break
                listing = parse_listing(text)
                rec = {"cat": cat, "page": page, "pages": listing["pages"], "total": listing["total"], "url": url,
                       "items": listing["items"]}
                if listing["items"] and listing["items"][0]["item_no"].lower() not in seen:
                    journal.append(rec)  # only a page that adds items is worth remembering
            items = rec["items"]
            if not items or items[0]["item_no"].lower() in seen:
                break  # past the end: an empty page, or a page that repeats one already read
            crawl["pages"] += 1
            if rec["total"] is not None:
                crawl["listed_total"][cat or "all"] = rec["total"]
            pages = rec["pages"]  # None (no "Items Found" line): go on until an empty or repeated page
            referer = rec["url"]
            for item in items:
                seen.add(item["item_no"].lower())
                crawl["items"] += 1
                yield item_job(item, manifest, base_url, rec["url"])
            page += 1


def fetch_bricklink(
    out: str | os.PathLike,
    catalog_file: str | os.PathLike | None = None,
    categories_file: str | os.PathLike | None = None,
    categories: str | None = None,
    limit: int | None = None,
    refresh_list: bool = False,
    manifest: str | os.PathLike | None = None,
    base_url: str | None = None,
    delay: float | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    overrides: dict | None = None,
    progress: bool = False,
) -> FetchSummary:
    """Fetch minifigure images with names and categories into the dataset folder ``out``.

    ``delay`` (seconds between listing pages), ``concurrency`` and ``rate`` (image requests in flight and per second,
    0: unpaced) override the manifest's politeness;
    ``overrides`` other FetchOptions fields (retries, timeout, backoff…)."""
    cats = _category_filter(categories)
    delays: dict = {}

    def engine(manifest: dict) -> FetchOptions:  # one lane for the listing pages, one for the images
        pol = manifest.get("politeness", {})
        delays["delay"] = d = float(pol.get("delay", 3.0)) if delay is None else delay
        images = int(pol.get("image_concurrency", 4)) if concurrency is None else concurrency
        return FetchOptions(
            concurrency=images + 1, per_host=images, retries=int(pol.get("retries", 5)),
            timeout=float(pol.get("timeout", 30.0)), max_wait=float(pol.get("max_wait", 900.0)),
            lanes={SITE: {"concurrency": 1, "rate": 1.0 / d if d > 0 else None},
                   IMAGES: {"concurrency": images,
                            "rate": pol.get("image_rate") if rate is None else (rate or None)}})

    src = Source.open("bricklink", manifest, base_url, overrides, engine, delay=delay, concurrency=concurrency,
                      rate=rate, limit=limit)
    manifest, opts, delay = src.manifest, src.engine, delays["delay"]
    throttle_wait = float(manifest.get("politeness", {}).get("throttle_wait", 60.0))
    crawl = {"pages": 0, "items": 0, "listed_total": {}, "page_failures": []}
    provenance: dict = {"manifest": src.manifest_path}
    with Dataset.create(out, opts.durability) as ds:
        if catalog_file is not None:
            items = _read_catalog(catalog_file, categories_file, cats)
            provenance["catalog_file"] = str(catalog_file)
            item_url = manifest["site"]["item_url"]
            jobs = [item_job(it, manifest, base_url, rebase(item_url.format(no=it["item_no"].lower()), base_url))
                    for it in items]
            total_hint = len(jobs)
        else:
            if refresh_list:
                ds.forget_journal("pages")
            jobs = lambda fetcher: crawl_jobs(fetcher, ds, manifest, cats, base_url, throttle_wait, crawl)  # noqa: E731
            total_hint = None
        stats = fetch(ds, "bricklink", jobs, target=limit, options=opts, progress=progress, total_hint=total_hint)
        summary = describe_run(stats, "fetch bricklink", out, provenance,
                     {"catalog_file": str(catalog_file) if catalog_file else None, "categories": categories,
                      "limit": limit, "delay": delay, "base_url": base_url})
        summary.extra["crawl"] = crawl
        if crawl["page_failures"] and not summary.stopped:
            first = crawl["page_failures"][0]
            summary.stopped = (
                f"{len(crawl['page_failures'])} listing page(s) could not be read (first: {first['url']}: "
                f"{first['error']}); the items of the pages read are kept; run again to continue"
            )
        ds.write_stats(summary.to_json())
    return summary


def _read_catalog(catalog_file: str | os.PathLike, categories_file: str | os.PathLike | None,
                  cats: list[str] | None) -> list[dict]:
    def read(path: str | os.PathLike, option: str) -> str:
        try:
            return read_text(path, f"{option} {path}")
        except OSError as e:
            raise UserError(f"cannot read {option} {path} ({e.strerror})") from None

    categories = None
    if categories_file:
        try:
            categories = parse_categories_file(read(categories_file, named("categories_file")))
        except ValueError as e:
            raise UserError(f"{named('categories_file', categories_file)}: {e}; give BrickLink's tab-delimited "
                            "categories download") from None
    if cats and any("." in c for c in cats) and categories is None:
        raise UserError(f"{named('categories')} with sub-categories (e.g. 65.257) needs "
                        f"{hint('categories_file', 'FILE')} to match a catalog file's category names; top-level ids "
                        "(65) work without it")
    try:
        items = list(parse_catalog_file(read(catalog_file, named("catalog_file")), categories))
    except ValueError as e:
        raise UserError(
            f"{named('catalog_file', catalog_file)}: {e}; give BrickLink's tab-delimited catalog download"
        ) from None
    if cats:
        items = [it for it in items if _matches(it, cats)]
    if not items:
        raise UserError(
            f"{named('catalog_file', catalog_file)} lists no minifigures"
            + (f" in categories {','.join(cats)}" if cats else "")
        )
    return items
