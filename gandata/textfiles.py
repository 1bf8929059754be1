"""Every text file a user gives — URL lists, catalogues, avatar ids, CSVs, trait catalogues, manifests, pipeline
files — decoded in one place, by one rule, so that a record is read exactly or the file is refused in one line
naming it and the line.

* UTF-8 is read with or without a byte-order mark; UTF-16 and UTF-32 with a byte-order mark (what Windows
  editors write when told "Unicode"); UTF-16 without one only where its bytes say so unmistakably: the first bytes
  pair a character with a NUL, always on the same side (UTF-8 text holds no NUL, so no UTF-8 file looks so).
* Line ends may be LF, CRLF or a lone CR (old Mac spreadsheets), mixed; every line is handed on ending in ``\\n``
  (the last one as it is: a missing final newline loses nothing).
* Anything else is refused, never guessed: bytes that are not UTF-8 (a latin-1 or Windows-1252 file) do not say
  which of the dozens of 8-bit code pages wrote them — reading them as latin-1 would silently turn a Cyrillic or
  Greek file into nonsense — and a NUL byte is in no text file (it is binary data, or UTF-16/32 without a mark). The
  one line names the file, the line, the column and the byte, and says how to save it as UTF-8.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from .errors import UserError

_BOMS = (  # longest first: a UTF-32-LE mark begins like a UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)
SNIFF = 64  # bytes looked at for a byte-order mark, or the NUL pattern of UTF-16 without one
CHUNK = 1 << 16


class NotText(UserError, ValueError):
    """A file that is not text in an encoding gandata reads (a :class:`UserError`: one line for the user; a
    ``ValueError``: what an asset's parser raises for content it cannot use)."""


def _encoding(head: bytes) -> tuple[str, str, int]:
    """(codec, its name for people, bytes of byte-order mark to skip) for a file that starts with ``head``."""
    for bom, codec, label in _BOMS:
        if head.startswith(bom):
            return codec, label, len(bom)
    pairs = [head[i:i + 2] for i in range(0, len(head) - 1, 2)]
    if len(pairs) >= 2:
        if all(p[1] == 0 and p[0] != 0 for p in pairs):
            return "utf-16-le", "UTF-16", 0
        if all(p[0] == 0 and p[1] != 0 for p in pairs):
            return "utf-16-be", "UTF-16", 0
    return "utf-8", "UTF-8", 0


def _lines_ending(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _where(name: str | None, text: str, at: int, lines_before: int) -> str:
    """``NAME, line N, column C`` of position ``at`` of ``text`` (line ends already ``\\n``), which starts at the
    beginning of line ``lines_before + 1``."""
    line = lines_before + text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    return f"{name + ', ' if name else ''}line {line}, column {column}"


def text_lines(chunks: Iterable[bytes], name: str | None = None) -> Iterator[str]:
    """The lines of a text file given as byte chunks (streamed: never more than a chunk and a line in memory), each
    ending in ``\\n`` but perhaps the last. ``name`` (the file as the user knows it, e.g. ``--catalog-file x.txt``)
    begins the message of the :class:`NotText` raised at the first byte that breaks the rule of this module; lines
    before it have been handed on already — a caller that must not act on part of a file reads it through first."""
    chunks = iter(chunks)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= SNIFF:
            break
    codec, label, skip = _encoding(head[:SNIFF])
    decoder = codecs.getincrementaldecoder(codec)("strict")
    pending = ""  # the current line so far (no line end), perhaps with a CR that may be half of a CRLF
    done = 0  # lines handed on
    for data in _then(head[skip:], chunks):
        final = data is None
        try:
            text = decoder.decode(data or b"", final)
        except UnicodeDecodeError as e:
            raise _undecodable(e, codec, label, name, pending, done) from None
        buf = pending + text
        hold = "\r" if not final and buf.endswith("\r") else ""
        buf = _lines_ending(buf[:-1] if hold else buf)
        if "\0" in buf:
            raise _nul(name, buf, done)
        lines = buf.split("\n")
        pending = lines.pop() + hold
        for line in lines:
            yield line + "\n"
        done += len(lines)
    if pending:
        yield pending


def _then(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes | None]:
    """``first``, the chunks of ``rest``, then None (the end: the decoder must have used every byte)."""
    yield first
    yield from rest
    yield None


def _nul(name: str | None, text: str, done: int) -> NotText:
    return NotText(f"{_where(name, text, text.find(chr(0)), done)}: a NUL byte, which no text file holds (binary "
                   "data, or UTF-16 without a byte-order mark?); save the file as UTF-8 text")


def _undecodable(e: UnicodeDecodeError, codec: str, label: str, name: str | None, pending: str,
                 done: int) -> NotText:
    """The one line for the first bytes that are not ``label`` text: where they are, what they are, what to do."""
    good = _lines_ending(pending + e.object[:e.start].decode(codec, "replace"))
    if "\0" in good:  # a NUL before the bad bytes: the first thing wrong
        return _nul(name, good, done)
    bad = e.object[e.start:e.end]
    what = (f"{_where(name, good, len(good), done)}: "
            + (f"byte 0x{bad[0]:02X} is" if len(bad) == 1 else f"bytes {' '.join(f'0x{b:02X}' for b in bad)} are"))
    if codec != "utf-8":
        return NotText(f"{what} not {label} text (a damaged file?); save the file again, as UTF-8")
    guess = bad[:1].decode("cp1252", "ignore")
    return NotText(f"{what} not UTF-8 text{f' ({guess!r} in latin-1 or Windows-1252)' if guess else ''}; save the "
                   "file as UTF-8, e.g. iconv -f cp1252 -t utf-8 OLD > NEW")


def stream_lines(f: BinaryIO, name: str | None = None) -> Iterator[str]:
    """:func:`text_lines` of an open binary file, read a chunk at a time."""
    return text_lines(iter(lambda: f.read(CHUNK), b""), name)


def decode_text(data: bytes, name: str | None = None) -> str:
    """A whole text file's bytes as text (byte-order mark gone, line ends ``\\n``), or :class:`NotText`."""
    return "".join(text_lines((data,), name))


def read_text(path: str | os.PathLike, name: str | None = None) -> str:
    """:func:`decode_text` of the file at ``path`` (``OSError`` is the caller's to word)."""
    with open(path, "rb") as f:
        return decode_text(f.read(), name if name is not None else str(path))
