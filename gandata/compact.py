"""Collections for per-sample bookkeeping at millions of samples: strings in one buffer (:class:`Strings`), and a
set of them that gives each an id (:class:`KeySet`) — a few dozen bytes an entry where Python's own ``str`` in a
``set`` or ``dict`` takes one to two hundred (docs/memory.md)."""

from __future__ import annotations

from array import array
from collections.abc import Iterator


class Strings:
    """An append-only list of strings (``text``) or byte strings, held in one buffer: its length plus 8 bytes an
    entry. Text keeps the surrogate escapes of a file name that is not UTF-8 (``café`` in latin-1) as they were."""

    def __init__(self, text: bool = True):
        self._text = text
        self._blob = bytearray()
        self._ends = array("q")

    def append(self, s: str | bytes) -> int:
        """Add ``s``; returns its index."""
        self._blob += s.encode("utf-8", "surrogateescape") if self._text else s  # a file name's undecodable bytes
        self._ends.append(len(self._blob))
        return len(self._ends) - 1

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str | bytes:
        if not 0 <= i < len(self._ends):
            raise IndexError(i)
        raw = self._blob[self._ends[i - 1] if i else 0: self._ends[i]]
        return raw.decode("utf-8", "surrogateescape") if self._text else bytes(raw)

    def __iter__(self) -> Iterator[str | bytes]:
        return (self[i] for i in range(len(self._ends)))


class KeySet:
    """Distinct strings (or byte strings), each given an id — 0, 1, … in the order first added — found again by an
    open-addressing table of ids over their hashes: about 30 bytes an entry beside the text. One thread adds (or
    several under a lock) while others look up: a key is findable once :meth:`add` has returned, and the table is
    replaced whole when it grows."""

    def __init__(self, text: bool = True):
        self.keys = Strings(text)  # by id
        self._hashes = array("q")  # by id
        self._table = (array("i", [-1]) * 1024, 1023)  # (slots: an id or -1, at most half full; the mask)

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, key: str | bytes) -> bool:
        return self.find(key) >= 0

    def __iter__(self) -> Iterator[str | bytes]:
        return iter(self.keys)

    def _probe(self, key: str | bytes, h: int) -> tuple[int, int]:
        """(the key's id or -1, the slot it is in or would go in)."""
        (slots, mask), hashes = self._table, self._hashes
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
        slots = self._table[0]
        slots[slot] = j
        if 2 * len(self._hashes) > len(slots):
            self._grow(2 * len(slots))
        return j, True

    def _grow(self, size: int) -> None:
        slots, mask = array("i", [-1]) * size, size - 1
        for j, h in enumerate(self._hashes):
            i = h & mask
            while slots[i] >= 0:
                i = (i + 1) & mask
            slots[i] = j
        self._table = (slots, mask)


class StringMap:
    """A map of strings (or byte strings) to strings that only grows — :meth:`setdefault` and :meth:`get` — held as
    a :class:`KeySet` and a :class:`Strings` of values by the keys' ids. Callers that add from several threads hold
    a lock around :meth:`setdefault`."""

    def __init__(self, text_keys: bool = True):
        self._keys = KeySet(text_keys)
        self._values = Strings()

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: str | bytes) -> str | None:
        j = self._keys.find(key)
        return self._values[j] if j >= 0 else None

    def setdefault(self, key: str | bytes, value: str) -> str:
        """The value stored for ``key``; ``value`` (now stored) when it had none."""
        j, new = self._keys.add(key)
        if new:
            self._values.append(value)
            return value
        return self._values[j]
