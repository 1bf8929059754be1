"""The per-sample bookkeeping of shard (and of the inputs and the hash cache) at a few dozen bytes a sample: the
compact collections, the run's columns, rejected.jsonl's spill, the spool's index and the hash cache, each checked
for what it gives back and, by tracemalloc (bytes, not seconds), for what it holds."""

from __future__ import annotations

import dataclasses
import json
import platform
import random
import sys
import tracemalloc

import pytest

from gandata import shard_map
from gandata.compact import KeySet, StringMap, Strings
from gandata.dedupe import HashCache
from gandata.errors import UserError
from gandata.records import Item, Items
from gandata.shard_map import Rejected, Spool


def test_strings_give_back_what_was_added():
    s = Strings()
    words = ["", "a", "ünïcode/путь", "x" * 300]
    assert [s.append(w) for w in words] == [0, 1, 2, 3]
    assert list(s) == words and len(s) == 4 and s[2] == "ünïcode/путь"
    with pytest.raises(IndexError):
        s[4]
    with pytest.raises(IndexError):
        s[-1]
    b = Strings(text=False)
    b.append(b"\x00\xff")
    assert b[0] == b"\x00\xff"


def test_keyset_is_a_set_with_ids_across_growth():
    rng = random.Random(1)
    keys = [f"k{rng.randrange(50_000)}" for _ in range(20_000)]
    ks, ref = KeySet(), {}
    for k in keys:
        j, new = ks.add(k)
        assert new == (k not in ref)
        ref.setdefault(k, j)
        assert j == ref[k]
    assert len(ks) == len(ref) and list(ks) == list(ref)
    assert all(ks.find(k) == j for k, j in ref.items())
    assert ks.find("absent") == -1 and "absent" not in ks and keys[0] in ks
    raw = KeySet(text=False)
    assert raw.add(b"\x01" * 32) == (0, True) and raw.add(b"\x01" * 32) == (0, False) and raw.find(b"\x02") == -1


class _Collide(str):
    """A key whose hash is the same as every other's: the table must still tell them apart by their text."""

    def __hash__(self) -> int:
        return 7


def test_keyset_tells_apart_keys_with_one_hash():
    ks = KeySet()
    for i in range(40):
        assert ks.add(_Collide(f"c{i}")) == (i, True)
    assert all(ks.find(_Collide(f"c{i}")) == i for i in range(40)) and ks.find(_Collide("c40")) == -1


def _item(i: int, **kw) -> Item:
    it = Item(f"key-{i:07d}", f"/data/set/images/{i % 256:02x}/key-{i:07d}.png", f"{i:064x}")
    for k, v in kw.items():
        setattr(it, k, v)
    return it


def _made(it: Item, i: int) -> Item:
    it.ok, it.digest, it.ow, it.oh, it.w, it.h, it.phash = True, f"{i * 7:064x}", 100 + i, 90, 64, 64, f"{i:016x}"
    it.file, it.offset, it.length, it.rfile, it.roffset, it.rlen = "/spool.bin", 10 * i, 10, "/records.bin", 5 * i, 5
    it.sig, it.label = i % 3, ["cat", "dog", None, {"x": 1}][i % 4]
    return it


def test_items_round_trip_and_the_key_rule():
    items = Items()
    made = []
    for i in range(300):
        it = _item(i)
        assert items.admit(it) == -1 and it.at == i
        made.append(_made(it, i) if i % 10 else it)
        if i % 10:
            items.fill(it)
        else:
            it.ok, it.reason = False, "cannot decode"
            items.fill(it)
    for i in (1, 37, 298, 299):
        back = items.item(i)
        label = made[i].label if not isinstance(made[i].label, dict) else None  # an object is no label
        assert back == dataclasses.replace(made[i], label=label)
    assert items.item(0).reason == "cannot decode" and not items.item(0).ok and items.reasons == {
        i: "cannot decode" for i in range(0, 300, 10)}
    assert items.rows().tolist() == [i for i in range(300) if i % 10]
    assert items.labels == ["dog", "cat"]  # first seen first; None and objects are no label
    again = _item(5)
    assert items.admit(again) == 5 and again.at == -1  # the same key and bytes: the first row
    with pytest.raises(UserError, match="two inputs give the key 'key-0000005' to different images"):
        items.admit(Item("key-0000005", "elsewhere.png", "ab" * 32))
    items.close()


def test_items_hold_a_few_hundred_bytes_a_sample():
    """What made a 1 M-sample shard need gigabytes: a Python object per sample. The columns must stay under 250
    bytes a sample (keys of 11 characters, origins of 36, on disk)."""
    n = 40_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        items = Items()
        for i in range(n):
            it = _item(i)
            items.admit(it)
            items.fill(_made(it, i))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held / n < 250, f"{held / n:.0f} bytes a sample"
    items.close()


def test_rejected_sorts_across_spilled_runs(monkeypatch):
    monkeypatch.setattr(Rejected, "RUN", 7)
    rng = random.Random(3)
    rows = [(rng.choice(["unreadable", "exact_duplicate", "input_problem"]), rng.choice([None, f"k{i}"]),
             f"o{rng.randrange(30)}", f"r{rng.randrange(3)}") for i in range(50)]
    rej = Rejected()
    for r in rows:
        rej.add(*r)
    got = list(rej.sorted())
    want = sorted(({"kind": k, "key": key, "origin": o, "reason": why} for k, key, o, why in rows),
                  key=lambda r: (r["kind"], r["origin"], r["reason"], r["key"] or ""))
    assert got == want and len(rej) == 50
    assert rej.counts["unreadable"] == sum(r[0] == "unreadable" for r in rows)
    assert rej.first_lost == next({"kind": k, "key": key, "origin": o, "reason": why} for k, key, o, why in rows
                                  if k != "input_problem")
    rej.add("unreadable", "late", "z", "r")  # adding after a sorted pass goes to the end of the file
    assert len(list(rej.sorted())) == 51
    rej.close()


def test_spool_index_reads_the_latest_row_and_skips_damage(tmp_path):
    popts = {"size": 8}
    spool = Spool(tmp_path, popts)
    for i, src in ((1, "a" * 64), (2, "b" * 64), (1, "c" * 64)):  # key 1 twice: the later row wins
        it = _made(_item(i, src=src), i)
        spool.put(it, b"img")
    spool.close()
    with open(tmp_path / "index.jsonl", "ab") as f:
        f.write(b"not json\n" + json.dumps({"key": _item(3).key, "src": "d" * 64}).encode())  # corrupt, torn
    spool = Spool(tmp_path, popts)
    assert not spool.reuse(_item(1, src="a" * 64)) and spool.reuse(got := _item(1, src="c" * 64))
    assert got.ok and (got.offset, got.length) == (6, 3) and got.file == spool.path  # the third image put
    assert spool.reuse(_item(2, src="b" * 64)) and not spool.reuse(_item(3, src="d" * 64))
    spool.close()
    assert Spool(tmp_path, {"size": 16})._earlier.find(_item(1).key) == -1  # other pixel options: wiped


def test_hash_cache_reads_compactly_and_keeps_the_latest(tmp_path):
    path = tmp_path / "h.jsonl"
    rows = [{"sha256": "aa" * 32, "hash": "gandata-phash-v2", "phash": "00000000000000ff", "width": 4, "height": 5},
            {"sha256": "bb" * 32, "hash": "gandata-phash-v1", "phash": "1", "width": 4, "height": 5},  # old hash
            {"sha256": "zz", "hash": "gandata-phash-v2", "phash": "1", "width": 4, "height": 5},  # not hex
            {"sha256": "cc" * 32, "hash": "gandata-phash-v2", "phash": "-1", "width": 4, "height": 5},
            {"sha256": "dd" * 32, "hash": "gandata-phash-v2", "phash": "1", "width": "x", "height": 5},
            {"sha256": "aa" * 32, "hash": "gandata-phash-v2", "phash": "0000000000000001", "width": 6, "height": 7}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = HashCache(path)
    assert cache.get("aa" * 32) == (1, 6, 7)
    assert cache.get("bb" * 32) is None and cache.get("cc" * 32) is None and cache.get("dd" * 32) is None
    assert cache.get("not hex") is None
    cache.put("ee" * 32, 2**64 - 1, 3, 3)
    cache.close()
    assert HashCache(path).get("ee" * 32) == (2**64 - 1, 3, 3)


def test_admit_lists_the_same_file_twice():
    items, rej = Items(), Rejected()
    assert shard_map.admit(items, _item(1), rej) and not shard_map.admit(items, _item(1, origin="copy.png"), rej)
    assert [r["reason"] for r in rej.sorted()] == ["same file as /data/set/images/01/key-0000001.png"]


def test_exact_duplicates_are_whole_digests_not_their_prefix():
    """The reduce groups rows by 8 bytes of their digest, then by the whole: two images whose digests share the
    prefix are both kept; true duplicates keep the largest source, then the smallest key."""
    from gandata.shard import _drop_exact_duplicates

    items, rej = Items(), Rejected()
    a, b = "ab" * 8 + "00" * 24, "ab" * 8 + "11" * 24  # one prefix, two digests
    digests = [a, b, a, "cd" * 32, "cd" * 32, a]
    sizes = [(10, 10), (10, 10), (20, 20), (5, 5), (5, 5), (20, 20)]
    for i, (d, (w, h)) in enumerate(zip(digests, sizes)):
        it = _made(_item(i), i)
        it.digest, it.ow, it.oh = d, w, h
        items.admit(it)
        items.fill(it)
    _drop_exact_duplicates(items, rej)
    assert items.rows().tolist() == [1, 2, 3]
    assert sorted((r["key"], r["reason"]) for r in rej.sorted()) == [
        ("key-0000000", "exact duplicate of key-0000002"), ("key-0000004", "exact duplicate of key-0000003"),
        ("key-0000005", "exact duplicate of key-0000002")]


def test_string_map_keeps_the_first_value():
    m = StringMap(text_keys=False)
    assert m.setdefault(b"\x01" * 32, "first") == "first" and m.setdefault(b"\x01" * 32, "second") == "first"
    assert m.get(b"\x01" * 32) == "first" and m.get(b"\x02") is None and len(m) == 1


def test_keyset_lookups_during_growth_from_another_thread():
    """fetch looks keys up on its event loop while worker threads add them: a lookup racing a growth of the table
    finds every key added before it began, and never fails."""
    import threading

    ks, stop, errors = KeySet(), threading.Event(), []
    ks.add("k0")

    def look() -> None:
        while not stop.is_set():
            try:
                assert ks.find("k0") == 0
            except Exception as e:  # noqa: BLE001 - any failure in the reader is the test's failure
                errors.append(e)
                return

    reader = threading.Thread(target=look)
    reader.start()
    for i in range(1, 60_000):
        ks.add(f"k{i}")
    stop.set()
    reader.join()
    assert not errors and len(ks) == 60_000


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_steady_heap_fixes_the_mmap_threshold():
    from gandata.workers import steady_heap

    assert steady_heap() is True
