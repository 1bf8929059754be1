"""Text from data as a terminal may show it. Names that come from data — folders, files, labels, keys, origins,
a tar member's name, a server's reason — can hold control characters: an escape sequence that clears the screen or
retitles the window, a newline that forges a second line, a tab. Every line the command line prints passes through
:func:`shown`, which writes each of them as a visible escape instead (``\\x1b``, ``\\n``, ``\\t``), and the
undecodable bytes of a file name that is not UTF-8 (Python's surrogate escapes) as the bytes they were
(``caf\\xe9``)."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, the line and paragraph separators, the bidirectional overrides and isolates (they reorder
# what follows on the line), and lone surrogates (a file name's undecodable bytes; also unprintable)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match) -> str:
    c = match.group()
    code = ord(c)
    if c in _NAMED:
        return _NAMED[c]
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's byte 0x80-0xff
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: object) -> str:
    """``text`` with every character a terminal would act on (or could not print) written as a visible escape; plain
    text (any script, emoji) is unchanged, and showing shown text changes nothing."""
    return _UNSAFE.sub(_escape, str(text))
