"""A local BrickLink/Rebrickable look-alike for the tests.

The listing pages are SYNTHETIC: no real saved `catalogList.asp` page exists in the fixtures, so they are built
here from the structure documented in shared/research/sources.md §2.3 (the `catalog-list__body-main` table, item
links `/v2/catalog/catalogitem.page?M=…`, names in `<strong>`, category links with `catString`, and the
"N Items Found. Page x of y" line). The items on them are the real rows of the catalog-download fixture.

Routes: `/catalogList.asp` (catType, catString, pg), `/ItemImage/MN/0/{no}.png`, `/ItemImage/ML/{no}.png`,
`/M/{no}.jpg`, `/media/downloads/minifigs.csv.gz`, `/media/sets/{fig}.jpg`.
Knobs: `page_size`, `missing_main` / `missing_all` (item numbers without images), `throttle` (how many times each
listing page answers with the Quota Exceeded page first; `throttle_status` its HTTP status), `challenge` (every page
is a WAF challenge; `challenge_status` its HTTP status),
`count_line` (False: no "Items Found" line and pages past the end repeat the last one).
"""

from __future__ import annotations

import asyncio
import gzip
import html
import time
from collections import Counter

from aiohttp import web
from conftest import fixture_path
from renderserver import draw_png

from gandata.localserver import LocalServer
from gandata.sources.bricklink import parse_catalog_file, parse_categories_file

THROTTLE_PAGE = """<!DOCTYPE html><html><head><title>BrickLink</title></head><body>
<div id="blErrorTitle">Quota Exceeded</div><div class="blErrorDetail"><pre>You have exceeded the allowed number
of requests. Please try again later.</pre></div></body></html>"""

CHALLENGE_PAGE = """<!DOCTYPE html><html><head><script src="https://example.token.awswaf.com/challenge.js"></script>
<script>window.awsWafCookieDomainList = [];</script></head><body><div id="challenge-container"></div>
<noscript>JavaScript is required</noscript></body></html>"""


def catalog_items() -> list[dict]:
    cats = parse_categories_file(fixture_path("sources/bricklink_categories.txt").read_text("utf-8"))
    text = fixture_path("sources/bricklink_Minifigures_excerpt.txt").read_text("utf-8")
    return list(parse_catalog_file(text, cats))


def listing_page(items: list[dict], total: int, page: int, pages: int, count_line: bool = True) -> str:
    rows = []
    for it in items:
        no = html.escape(it["item_no"])
        cats, ids = it["category_path"].split(" / "), it["cat_string"].split(".")
        links = ['<a href="catalogTree.asp?itemType=M">Minifigures</a>']
        for i, name in enumerate(cats[: len(ids)]):
            links.append(
                f'<a href="catalogList.asp?catType=M&amp;catString={".".join(ids[: i + 1])}">{html.escape(name)}</a>'
            )
        rows.append(
            f'<tr class="catalog-list__body-main--row">'
            f'<td><span data-itemid="{abs(hash(no)) % 10**6}"><a href="/v2/catalog/catalogitem.page?M={no}">'
            f'<img src="//img.bricklink.com/ItemImage/MT/0/{no}.t1.png" '
            f'alt="Minifig No: {no}  Name: {html.escape(it["name"])}">'
            f"</a></span></td>"
            f'<td><font face="Tahoma,Arial" size="2"><a href="/v2/catalog/catalogitem.page?M={no}">{no}</a>'
            f' (<a href="catalogItemInv.asp?M={no}">Inv</a>)</font></td>'
            f'<td><strong>{html.escape(it["name"])}</strong><br>'
            f'<font class="fv">Catalog: {":&nbsp;".join(links)}</font></td>'
            f"</tr>"
        )
    count = (
        f"<div><b>{total}</b> Items Found. Page <b>{page}</b> of <b>{pages}</b> "
        f"(Showing {len(items)} Items Per Page)</div>"
        if count_line
        else "<div>Items</div>"
    )
    nxt = f'<a href="/catalogList.asp?pg={page + 1}&amp;catType=M">Next</a>' if page < pages else ""
    return (
        "<!DOCTYPE html><html><head><title>BrickLink Reference Catalog - Minifigures</title></head><body>"
        '<div class="catalog-list__body">'
        f'<div class="catalog-list__pagination--top"><div>Catalog</div>{count}<div>{nxt}</div></div>'
        '<form id="ItemEditForm"><table><tr><td>'
        '<table class="bg-color--white catalog-list__body-main catalog-list__body-main--alternate-row">'
        "<tr><th>Image</th><th>Item No</th><th>Description</th></tr>"
        + "".join(rows)
        + "</table></td></tr></table></form></div></body></html>"
    )


class BrickServer:
    def __init__(self) -> None:
        self.items = catalog_items()
        self.page_size = 10
        self.missing_main: set[str] = set()
        self.missing_all: set[str] = set()
        self.throttle = 0
        self.throttle_status = 200
        self.challenge = False
        self.challenge_status = 200
        self.count_line = True
        self.log: list[tuple[float, float, str, str]] = []  # (start, end, path_qs, referer)
        self.page_hits: Counter = Counter()
        rb = fixture_path("sources/rebrickable_minifigs_excerpt.csv").read_bytes()
        self.rebrickable_csv = gzip.compress(rb, mtime=0)
        self._server = LocalServer(self._routes())
        self.port, self.url = self._server.port, self._server.url

    def _routes(self) -> list:
        return [
            ("GET", "/catalogList.asp", self._listing),
            ("GET", "/ItemImage/MN/0/{no}.png", self._image("MN")),
            ("GET", "/ItemImage/ML/{no}.png", self._image("ML")),
            ("GET", "/M/{no}.jpg", self._image("M")),
            ("GET", "/media/downloads/minifigs.csv.gz", self._csv),
            ("GET", "/media/sets/{fig}.jpg", self._image("RB")),
        ]

    def in_category(self, cat: str | None) -> list[dict]:
        if not cat:
            return self.items
        return [it for it in self.items if it["cat_string"] == cat or it["cat_string"].startswith(cat + ".")]

    async def _listing(self, request: web.Request) -> web.Response:
        t0 = time.monotonic()
        await asyncio.sleep(0.01)
        key = request.path_qs
        self.page_hits[key] += 1
        q = request.query
        items = self.in_category(q.get("catString"))
        pages = max(1, -(-len(items) // self.page_size))
        page = int(q.get("pg", "1"))
        status = 200
        if self.challenge:
            body, status = CHALLENGE_PAGE, self.challenge_status
        elif self.page_hits[key] <= self.throttle:
            body, status = THROTTLE_PAGE, self.throttle_status
        else:
            shown = min(page, pages) if not self.count_line else page  # without a count line, past the end repeats
            chunk = items[(shown - 1) * self.page_size : shown * self.page_size]
            body = listing_page(chunk, len(items), page, pages, self.count_line)
        self.log.append((t0, time.monotonic(), key, request.headers.get("Referer", "")))
        return web.Response(text=body, content_type="text/html", status=status)

    def _image(self, kind: str):
        async def handler(request: web.Request) -> web.Response:
            no = request.match_info.get("no") or request.match_info.get("fig")
            self.log.append((time.monotonic(), time.monotonic(), request.path_qs, request.headers.get("Referer", "")))
            if no in self.missing_all or (kind == "MN" and no in self.missing_main):
                return web.Response(status=404, text="Not Found")
            return web.Response(body=draw_png(f"{kind}:{no}"), content_type="image/png")

        return handler

    async def _csv(self, request: web.Request) -> web.Response:
        self.log.append((time.monotonic(), time.monotonic(), request.path_qs, ""))
        return web.Response(body=self.rebrickable_csv, content_type="application/gzip")

    def requests(self, prefix: str) -> list[str]:
        return [p for _, _, p, _ in self.log if p.startswith(prefix)]

    def close(self) -> None:
        self._server.close()
