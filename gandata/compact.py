"""Collections for per-sample bookkeeping at millions of samples: strings in one buffer (:class:`Strings`), and a
set of them that gives each an id (:class:`KeySet`) — a few dozen bytes an entry where Python's own ``str`` in a
``set`` or ``dict`` takes one to two hundred (docs/memory.md)."""

from __future__ import annotations

from array import array
from collections.abc import Iterator


class Strings:
    """An append-only list of strings (``text``) or byte strings, held in one buffer: its length plus 8 bytes an
    entry."""

    def __init__(self, text: bool = True):
        self._text = text
        self._blob = bytearray()
        self._ends = array("q")

    def append(self, s: str | bytes) -> int:
        """Add ``s``; returns its index."""
        self._blob += s.encode() if self._text else s
        self._ends.append(len(self._blob))
        return len(self._ends) - 1

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str | bytes:
        if not 0 <= i < len(self._ends):
            raise IndexError(i)
        raw = self._blob[self._ends[i - 1] if i else 0: self._ends[i]]
        return raw.decode() if self._text else bytes(raw)

    def __iter__(self) -> Iterator[str | bytes]:
        return (self[i] for i in range(len(self._ends)))


class KeySet:
    """Distinct strings (or byte strings), each given an id — 0, 1, … in the order first added — found again by an
    open-addressing table of ids over their hashes: about 30 bytes an entry beside the text."""

    def __init__(self, text: bool = True):
        self.keys = Strings(text)  # by id
        self._hashes = array("q")  # by id
        self._slots = array("i", [-1]) * 1024  # id, or -1; at most half full
        self._mask = len(self._slots) - 1

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, key: str | bytes) -> bool:
        return self.find(key) >= 0

    def __iter__(self) -> Iterator[str | bytes]:
        return iter(self.keys)

    def _probe(self, key: str | bytes, h: int) -> tuple[int, int]:
        """(the key's id or -1, the slot it is in or would go in)."""
        slots, hashes, mask = self._slots, self._hashes, self._mask
        i = h & mask
        while (j := slots[i]) >= 0:
            if hashes[j] == h and self.keys[j] == key:
                return j, i
            i = (i + 1) & mask
        return -1, i

    def find(self, key: str | bytes) -> int:
        """The key's id, or -1."""
        return self._probe(key, hash(key))[0]

    def add(self, key: str | bytes) -> tuple[int, bool]:
        """``(id, True)`` for a new key, ``(its id, False)`` for one already there."""
        h = hash(key)
        j, slot = self._probe(key, h)
        if j >= 0:
            return j, False
        j = self.keys.append(key)
        self._hashes.append(h)
        self._slots[slot] = j
        if 2 * len(self._hashes) > len(self._slots):
            self._grow()
        return j, True

    def _grow(self) -> None:
        slots = array("i", [-1]) * (2 * len(self._slots))
        mask = len(slots) - 1
        for j, h in enumerate(self._hashes):
            i = h & mask
            while slots[i] >= 0:
                i = (i + 1) & mask
            slots[i] = j
        self._slots, self._mask = slots, mask
