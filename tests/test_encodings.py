"""Every text file a user gives, in every encoding users have: each reader reads the records of the clean file
exactly, or refuses in one line naming the file and the line. The variants are generated (byte-order marks, UTF-16
LE/BE with and without a mark, UTF-32, latin-1, Windows-1252, CRLF, lone CR, mixed, NULs, no final newline, cut
short, and the combinations that matter), for every reader, from one clean UTF-8 text each."""

from __future__ import annotations

import codecs
import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gandata import assets, pipeline, stages
from gandata.errors import UserError
from gandata.options import PATH_TYPE
from gandata.sources import load_manifest
from gandata.sources.bitmoji import TraitCatalogue, parse_templates, read_avatar_ids
from gandata.sources.bricklink import _read_catalog
from gandata.sources.rebrickable import parse_minifigs_csv
from gandata.sources.urls import fetch_urls, read_url_list
from gandata.textfiles import decode_text, text_lines

NOWHERE = "http://127.0.0.1:9/never-asked"  # an asset given as a local file is never downloaded


@dataclass
class Reader:
    name: str
    file: str  # the file's name (a URL list's format comes from it)
    text: str  # the clean file: UTF-8, LF, a final newline; a non-ASCII character on a line after the first
    read: Callable[[Path], object]  # the file → its records, comparable with ==
    pack: Callable[[bytes], bytes] = lambda b: b  # how the bytes are stored (gzip for a .csv.gz)


def _asset(parse, option):
    return lambda p: assets.asset("test asset", NOWHERE, option, p, parse=parse)[0]


def _catalog_with(categories: Path) -> list[dict]:
    catalog = categories.with_name("catalog.txt")
    catalog.write_text("Category ID\tCategory Name\tNumber\tName\n65\tStar Wars / Café Wars\tsw1\tDroid\n"
                       "65\tStar Wars\tsw2\tPilot\n")
    return _read_catalog(catalog, categories, None)


def _pipeline(path: Path) -> dict:
    spec = pipeline.load(path)
    spec["pipeline"].pop("source_file")
    return spec


READERS = [
    Reader("urls-txt", "list.txt", "# a list\nhttp://x/1.png\n\n  http://x/2.png  \nhttp://x/café.png\n",
           lambda p: list(read_url_list(p))),
    Reader("urls-csv", "list.csv",
           'url,title,w\nhttp://x/1.png,"Rem, smiling",512\nhttp://x/2.png,"two\nlines ""quoted""",1\n'
           "http://x/3.png,Café,3\n", lambda p: list(read_url_list(p))),
    Reader("urls-tsv", "list.tsv", "url\tartist\nhttp://x/1.png\tme\nhttp://x/2.png\tZoë\n",
           lambda p: list(read_url_list(p))),
    Reader("urls-jsonl", "list.jsonl",
           '{"url": "http://x/1.png", "tags": ["a", "b"]}\n\n{"url": "http://x/2.png", "title": "Café"}\n',
           lambda p: list(read_url_list(p))),
    Reader("bricklink-catalog", "Minifigures.txt",
           "Category ID\tCategory Name\tNumber\tName\tYear Released\tWeight\n65\tStar Wars\tsw0001\tDroid\t1999\t3.2\n"
           "\n65\tStar Wars / Episode 1\tsw0002\tCafé Owner\t?\t?\n", lambda p: _read_catalog(p, None, None)),
    Reader("bricklink-categories", "categories.txt", "Category ID\tCategory Name\n\n65\tStar Wars\n257\tCafé Wars\n",
           _catalog_with),
    Reader("bitmoji-traits", "traits.json",
           '{\n  "traits": {"male": {"cm": {"categories": [\n    {"key": "hair", "options": [{"value": 1}]},\n'
           '    {"key": "coiffé", "options": [{"value": -1}, {"value": 2}]}\n  ]}}},\n'
           '  "outfits": {"male": {"brands": [{"outfits": [{"id": 7}]}]}}\n}\n',
           _asset(TraitCatalogue.parse, "--traits")),
    Reader("bitmoji-templates", "templates.json",
           '{"imoji": [\n  {"comic_id": "1", "template_id": "t", "src": "http://x/%s/1.png", "tags": ["a"]},\n'
           '  {"comic_id": "2", "src": "http://x/%s/2.png", "tags": ["café"]}\n]}\n',
           _asset(parse_templates, "--templates")),
    Reader("bitmoji-avatar-ids", "ids.txt", "# ids\n280531978_2-s1\n\n# café\nabc-v1\n", read_avatar_ids),
    Reader("rebrickable-csv", "minifigs.csv",
           'fig_num,name,num_parts,img_url\nfig-000001,Plain,,\nfig-000002,"Café Owner, with mug",4,http://x/1.jpg\n',
           _asset(parse_minifigs_csv, "--csv")),
    Reader("rebrickable-csv-gz", "minifigs.csv.gz",
           'fig_num,name,num_parts,img_url\nfig-000001,Plain,,\nfig-000002,"Café Owner, with mug",4,http://x/1.jpg\n',
           _asset(parse_minifigs_csv, "--csv"), gzip.compress),
    Reader("manifest", "bitmoji.toml",
           '# a manifest\n[catalogues]\ntraits = "https://x.example/traits.json"\n'
           'templates = "https://x.example/templates.json"\n\n[avatars]\nurl = "https://x.example/{view}?s={scale}"\n'
           '[comics]\nquery = { caption = "café" }\n', lambda p: load_manifest("bitmoji", p)[0]),
    Reader("pipeline", "p.toml", '[pipeline]\nname = "p"\n\n[fetch]\nsource = "urls"\nurl_list = "café.txt"\n',
           _pipeline),
]


def _lines(text: str) -> list[str]:
    return text.split("\n")[:-1]


def _with(text: str, end: str = "\n", last: bool = True) -> str:
    """``text`` with ``end`` for its line ends (``last`` False: no final one)."""
    body = end.join(_lines(text))
    return body + end if last else body


def _mixed(text: str) -> str:
    return "".join(line + ("\r\n" if i % 2 else "\n") for i, line in enumerate(_lines(text)))


def _nul_at(line: int) -> Callable[[str], str]:
    def put(text: str) -> str:
        lines = _lines(text)
        lines[line - 1] = lines[line - 1][:1] + "\0" + lines[line - 1][1:]
        return "".join(x + "\n" for x in lines)

    return put


def _first_non_ascii_line(text: str) -> int:
    return next(n for n, line in enumerate(_lines(text), 1) if not line.isascii())


BOM = codecs.BOM_UTF8
SAME: dict[str, Callable[[str], bytes]] = {  # variants read exactly as the clean file
    "lf": lambda t: t.encode(),
    "crlf": lambda t: _with(t, "\r\n").encode(),
    "cr": lambda t: _with(t, "\r").encode(),
    "mixed": lambda t: _mixed(t).encode(),
    "no-final-newline": lambda t: _with(t, last=False).encode(),
    "crlf-no-final-newline": lambda t: _with(t, "\r\n", last=False).encode(),
    "bom": lambda t: BOM + t.encode(),
    "bom-crlf": lambda t: BOM + _with(t, "\r\n").encode(),
    "bom-no-final-newline": lambda t: BOM + _with(t, last=False).encode(),
    "utf16le-bom": lambda t: t.encode("utf-16"),  # the machine's order, with its mark
    "utf16le-bom-crlf": lambda t: codecs.BOM_UTF16_LE + _with(t, "\r\n").encode("utf-16-le"),
    "utf16be-bom": lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"),
    "utf16be-bom-no-final-newline": lambda t: codecs.BOM_UTF16_BE + _with(t, last=False).encode("utf-16-be"),
    "utf32le-bom": lambda t: codecs.BOM_UTF32_LE + t.encode("utf-32-le"),
    "utf32be-bom-crlf": lambda t: codecs.BOM_UTF32_BE + _with(t, "\r\n").encode("utf-32-be"),
    "utf16le-no-bom": lambda t: t.encode("utf-16-le"),
    "utf16be-no-bom-crlf": lambda t: _with(t, "\r\n").encode("utf-16-be"),
}
# variants refused: (bytes, the line the message must name)
REFUSED: dict[str, Callable[[str], tuple[bytes, int]]] = {
    "latin1": lambda t: (t.encode("latin-1"), _first_non_ascii_line(t)),
    "cp1252-crlf": lambda t: (_with(t, "\r\n").encode("cp1252"), _first_non_ascii_line(t)),
    "bom-latin1": lambda t: (BOM + t.encode("latin-1"), _first_non_ascii_line(t)),
    "nul": lambda t: (_nul_at(2)(t).encode(), 2),
    "nul-crlf": lambda t: (_with(_nul_at(2)(t), "\r\n").encode(), 2),
    "nul-padding": lambda t: (t.encode() + b"\0" * 16, len(_lines(t)) + 1),  # a preallocated file, a crash
    "utf16le-bom-nul": lambda t: (_nul_at(2)(t).encode("utf-16"), 2),
    "utf16le-bom-cut-short": lambda t: (t.encode("utf-16") + b"x", len(_lines(t)) + 1),
    "utf16le-bom-lone-surrogate": lambda t: (t.encode("utf-16") + b"\x00\xd8x\x00", len(_lines(t)) + 1),
    "utf8-cut-in-a-character": lambda t: (_with(t, last=False).encode() + "é".encode()[:1], len(_lines(t))),
}


def _write(tmp_path: Path, folder: str, reader: Reader, data: bytes) -> Path:
    path = tmp_path / folder / reader.file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(reader.pack(data))
    return path


def test_the_clean_files_hold_what_the_variants_test(tmp_path):
    """A check of the check: every clean text has line ends to vary, a non-ASCII character (read exactly from
    UTF-16, refused from latin-1) after its first line, and records."""
    for reader in READERS:
        assert reader.text.endswith("\n") and reader.text.count("\n") >= 3, reader.name
        assert _first_non_ascii_line(reader.text) > 1, reader.name
        assert reader.read(_write(tmp_path, "clean", reader, reader.text.encode())), reader.name


@pytest.mark.parametrize("variant", SAME)
@pytest.mark.parametrize("reader", READERS, ids=[r.name for r in READERS])
def test_a_variant_is_read_exactly(tmp_path, reader, variant):
    clean = reader.read(_write(tmp_path, "clean", reader, reader.text.encode()))
    assert reader.read(_write(tmp_path, variant, reader, SAME[variant](reader.text))) == clean


@pytest.mark.parametrize("variant", REFUSED)
@pytest.mark.parametrize("reader", READERS, ids=[r.name for r in READERS])
def test_a_variant_is_refused_in_one_line_naming_the_file_and_line(tmp_path, reader, variant):
    data, line = REFUSED[variant](reader.text)
    path = _write(tmp_path, variant, reader, data)
    with pytest.raises(UserError) as e:
        reader.read(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message, message
    assert re.search(rf"\bline {line}\b", message), message


# the options that name a file a command reads: each is read as text by a reader above, or is not text at all
TEXT_INPUTS = {"url_list": "urls-*", "catalog_file": "bricklink-catalog", "categories_file": "bricklink-categories",
               "traits": "bitmoji-traits", "templates": "bitmoji-templates", "avatar_ids": "bitmoji-avatar-ids",
               "csv": "rebrickable-csv*", "manifest": "manifest"}
NOT_TEXT = {"cascade": "an XML file pinned by its sha256 and read by OpenCV",
            "inception_weights": "a weight file", "run": "a run folder or checkpoint"}


def test_every_file_a_command_reads_is_a_text_input_above_or_not_text():
    inputs = {o.key for s in stages.STAGES for o in s.options
              if not o.output and (o.type is PATH_TYPE or o.key == "url_list")}
    unsorted = inputs - TEXT_INPUTS.keys() - NOT_TEXT.keys()
    assert not unsorted, f"file options neither read by a reader of this test nor said to be binary: {unsorted}"
    names = [r.name for r in READERS]
    for key, pattern in TEXT_INPUTS.items():
        assert any(re.fullmatch(pattern.replace("*", ".*"), n) for n in names), key


def test_the_lines_are_the_same_whatever_the_chunks():
    """A CRLF, a multi-byte character or a byte-order mark split between two reads is still one."""
    data = codecs.BOM_UTF8 + "a\r\nb é\rc\r\n\r\nd".encode()
    whole = list(text_lines([data]))
    assert whole == ["a\n", "b é\n", "c\n", "\n", "d"]
    for cut in range(1, len(data)):
        assert list(text_lines([data[:cut], data[cut:]])) == whole, cut
    assert list(text_lines(bytes([b]) for b in data)) == whole
    wide = "a\r\nb é\n".encode("utf-16")
    assert list(text_lines(wide[i:i + 3] for i in range(0, len(wide), 3))) == ["a\n", "b é\n"]


def test_the_message_says_where_what_and_how():
    with pytest.raises(UserError) as e:
        decode_text(b"ok\ncaf\xe9\n", "list.txt")
    assert str(e.value) == ("list.txt, line 2, column 4: byte 0xE9 is not UTF-8 text ('é' in latin-1 or "
                            "Windows-1252); save the file as UTF-8, e.g. iconv -f cp1252 -t utf-8 OLD > NEW")
    with pytest.raises(UserError, match=r"^list.txt, line 1, column 3: a NUL byte"):
        decode_text(b"ab\0\n", "list.txt")
    with pytest.raises(ValueError, match=r"^line 1, column 1: byte 0x89"):  # an asset's parser: ValueError too
        decode_text(b"\x89PNG\r\n")


def test_a_list_with_a_bad_line_far_down_is_refused_before_anything_is_fetched(tmp_path):
    """The whole list is read before the first download: nothing is created, nothing asked for."""
    lst = tmp_path / "list.jsonl"
    lst.write_bytes(b"".join(json.dumps({"url": f"http://127.0.0.1:9/{i}.png"}).encode() + b"\n"
                             for i in range(5000)) + b'{"url": "http://127.0.0.1:9/caf\xe9.png"}\n')
    with pytest.raises(UserError, match=r"list.jsonl, line 5001, column 32: byte 0xE9"):
        fetch_urls(lst, "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()
