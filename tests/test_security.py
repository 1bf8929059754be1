"""The fourth hardening pass, the classes of issue 37 §6 that are about places and names: no command writes over its
own input (every command that writes, through links and second names too); nothing is written through a link;
ImageFolder's class indices equal the shards' class ids in every split and at any class count; a pipeline's
confinement judges the real path; a name from data never acts on the terminal; a file name that is not UTF-8
neither crashes a command nor changes on its way through one; a path over a limit says which limit."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from conftest import drawn_image, labelled_set, png_bytes, tar_of
from test_hardening import fails_in_one_line, gd

from gandata import paths
from gandata.errors import UserError
from gandata.export import export
from gandata.fileio import atomic_write, json_bytes
from gandata.pipeline import load, plan
from gandata.terminal import shown


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links followed) by its path: what must not change."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _images(folder: Path, n: int, names: list[bytes] | None = None, start: int = 0) -> Path:
    """``n`` distinct drawn PNGs in ``folder`` (``names``: their file names as bytes, any bytes a file system takes;
    ``start``: the first drawing)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names or [f"i{i}.png".encode() for i in range(n)]):
        Path(os.fsdecode(os.path.join(os.fsencode(folder), name))).write_bytes(
            png_bytes(drawn_image(start + i, (40, 40))))
    return folder


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """A labelled shard set (3 classes, train and val) in a folder of its own."""
    return labelled_set(tmp_path_factory.mktemp("small"), 12)


# ------------------------------------------------------------------------- no command writes over its input


def test_overlap_judges_the_real_path(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to(tmp_path / "a" / "b")
    (tmp_path / "a" / "f").write_text("x")
    os.link(tmp_path / "a" / "f", tmp_path / "hard")
    o = paths.overlap
    assert o(tmp_path / "a", tmp_path / "a/") == "is"
    assert o(tmp_path / "lnk", tmp_path / "a" / "b") == "is"  # a link is the folder it leads to
    assert o(tmp_path / "lnk" / ".." / "c", tmp_path / "a") == "inside"  # lnk/.. is a, not tmp_path
    assert o(tmp_path / "lnk" / ".." / ".." / "c", tmp_path / "a") is None  # tmp_path/c
    assert o(tmp_path / "a", tmp_path / "lnk" / "new" / "deeper") == "holds"
    assert o(tmp_path / "hard", tmp_path / "a" / "f") == "is"  # a second name of one file
    assert o(tmp_path / "a", tmp_path / "ab") is None and o(tmp_path / "ab", tmp_path / "a") is None
    assert o("s3://b/x", "s3://b/x/y.tar") == "holds" and o("s3://b/x", "s3://b/xy") is None
    assert o("s3://b/x", tmp_path / "s3:" / "b" / "x") is None  # a URL is not a local folder of that name
    assert paths.places("a/x-{0..2}.tar::b.tar") == ["a/x-0.tar", "a/x-1.tar", "a/x-2.tar", "b.tar"]
    assert paths.places("pipe:cat x.tar") == [] and paths.places("https://h/x.tar") == []


def test_export_into_a_folder_that_holds_its_input_deletes_nothing(tmp_path, small_set, capsys):
    """The case that was found: an earlier export's folder (its marker) that now holds the shards; the cleanup of
    what the export did not write would remove them."""
    import shutil

    out = tmp_path / "exp"
    export(str(small_set), out, format="imagefolder")
    shutil.copytree(small_set, out / "shards")
    before = _tree(out / "shards")
    tar = next((out / "shards").rglob("set-train-000000.tar"))  # in the set's generation folder
    for args in ([str(out / "shards"), "--out", str(out), "--format", "imagefolder"],
                 [str(out / "shards"), "--out", str(out / "shards" / "x.zip")],  # the zip inside the set
                 [str(tar), "--out", str(out), "--format", "imagefolder"]):
        line = fails_in_one_line(capsys, "export", *args, words=("never writes over its own input",))
        assert "--out" in line and "SHARDS" in line
        assert _tree(out / "shards") == before
    (tmp_path / "link").symlink_to(out / "shards")  # a second name of the input
    fails_in_one_line(capsys, "export", str(out / "shards"), "--out", str(tmp_path / "link"), "--format",
                      "imagefolder", words=("is the input",))
    with pytest.raises(UserError, match="holds the input"):  # the library call too, not only the command line
        export(str(out / "shards"), out, format="imagefolder")
    assert _tree(out / "shards") == before


@pytest.mark.parametrize("case", ["shard-inside", "shard-tar", "shard-link", "crop-inside", "crop-grid",
                                  "dedupe-report", "dedupe-grid", "inspect-grid", "fetch-list", "train-out",
                                  "sample-checkpoint", "sample-run-file"])
def test_no_command_writes_over_its_own_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    imgs = _images(tmp_path / "imgs", 3)
    (tmp_path / "out").mkdir()
    tar_of(tmp_path / "out" / "a.tar", [("k.png", png_bytes(drawn_image(0, (16, 16))))])
    (tmp_path / "lnk").symlink_to(imgs)
    (tmp_path / "urls").mkdir()
    (tmp_path / "urls" / "list.txt").write_text("http://127.0.0.1:9/a.png\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint-000000001.pt").write_bytes(b"not loaded: refused before")
    args = {
        "shard-inside": ("shard", "imgs", "--out", "imgs/shards"),
        "shard-tar": ("shard", "out/a.tar", "--out", "out"),
        "shard-link": ("shard", "imgs", "--out", "lnk"),
        "crop-inside": ("crop", "lego-faces", "--src", "imgs", "--out", "imgs/faces", "--locator", "layout"),
        "crop-grid": ("crop", "lego-faces", "--src", "imgs", "--out", "faces", "--debug-grid", "imgs/i0.png",
                      "--locator", "layout"),
        "dedupe-report": ("dedupe", "imgs", "--report", "imgs/i1.png"),
        "dedupe-grid": ("dedupe", "imgs", "out/a.tar", "--grid", "lnk/grid.png"),
        "inspect-grid": ("inspect", "imgs", "--grid", "imgs/sheet.png"),
        "fetch-list": ("fetch", "urls", "urls/list.txt", "--name", "n", "--out", "urls"),
        "train-out": ("train", "dcgan", "--shards", "out/a.tar", "--out", "out"),
        "sample-checkpoint": ("sample", "run", "--out", "run/checkpoint-000000001.pt"),
        "sample-run-file": ("sample", "run/checkpoint-000000001.pt", "--out", "run/checkpoint-000000001.pt"),
    }[case]
    before = _tree(tmp_path)
    fails_in_one_line(capsys, *args, words=("never writes over its own input",))
    assert _tree(tmp_path) == before  # nothing written, nothing removed


def test_an_output_beside_the_input_is_still_fine(tmp_path, capsys, monkeypatch):
    """The check is about overlap, not nearness: siblings, a name that only starts like the input, a grid inside
    a run folder (train writes its own there)."""
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "imgs", 3)
    code, _, err = gd(capsys, "inspect", "imgs", "--grid", "imgs-sheet.png")
    assert code == 0 and (tmp_path / "imgs-sheet.png").exists(), err
    code, _, err = gd(capsys, "dedupe", "imgs", "--report", "imgsx/r.jsonl")
    assert code == 0, err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint-000000001.pt").write_bytes(b"junk")
    code, _, err = gd(capsys, "sample", "run", "--out", "run/grid.png")
    assert "never writes over" not in err  # refused later, for the junk checkpoint, not for the place


# ------------------------------------------------------------------------------ nothing written through a link


def test_export_never_writes_through_a_link_in_its_folder(tmp_path, small_set):
    out, victim = tmp_path / "exp", tmp_path / "victim"
    export(str(small_set), out, format="imagefolder", split="all")
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    folder = next(p for p in sorted(out.iterdir()) if p.is_dir())
    names = sorted(p.name for p in folder.iterdir())
    other = next(p for p in sorted(out.iterdir()) if p.is_dir() and p != folder)
    target = next(other.iterdir())
    (victim / target.name).write_text("not an image")
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    folder.symlink_to(victim, target_is_directory=True)  # a class folder replaced by a link to elsewhere
    target.unlink()
    target.symlink_to(victim / target.name)  # a file replaced by a link to a file elsewhere
    (victim / f".{names[0]}.tmp-planted").write_text("a temporary's name")
    before = _tree(victim)
    export(str(small_set), out, format="imagefolder", split="all")
    assert _tree(victim) == before and sorted(p.name for p in victim.iterdir()) == sorted(before)
    assert not folder.is_symlink() and sorted(p.name for p in folder.iterdir()) == names
    assert not target.is_symlink() and target.read_bytes()[:4] == b"\x89PNG"
    assert not any(p.is_symlink() for p in out.rglob("*"))


def test_an_atomic_write_replaces_a_link_and_never_follows_one(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    link = tmp_path / "f.txt"
    link.symlink_to(outside)
    planted = tmp_path / f".f.txt.tmp-{os.getpid()}-{__import__('threading').get_ident()}"
    planted.symlink_to(outside)  # a link at the very temporary name a writer will use
    atomic_write(link, b"new")
    assert outside.read_text() == "keep" and not link.is_symlink() and link.read_bytes() == b"new"
    assert not planted.exists() and not planted.is_symlink()


# ----------------------------------------------------------------------- ImageFolder's indices are the class ids


def _imagefolder_index(root: Path) -> dict[str, int]:
    """torchvision's ``ImageFolder.find_classes``: the sorted folder names, their position the class index."""
    return {name: i for i, name in enumerate(sorted(e.name for e in os.scandir(root) if e.is_dir()))}


def test_imagefolder_indices_are_the_class_ids_in_a_split_that_lacks_classes(tmp_path):
    import webdataset as wds

    base = labelled_set(tmp_path, 16, names=tuple("abcdefgh"), val_fraction=0.25)
    info = json.loads((base / "dataset.json").read_text())
    lacking = 0
    for split in ("train", "val"):
        out = tmp_path / f"exp-{split}"
        s = export(str(base), out, format="imagefolder", split=split)
        index = _imagefolder_index(out)
        assert len(index) == len(info["labels"]["names"]) == s.classes  # every class has its folder
        assert json.loads((out / "classes.json").read_text())["classes"] == sorted(index)
        want = {}
        for tar in sorted(base.rglob(f"*-{split}-*.tar")):  # in the set's generation folder
            want.update({x["__key__"]: int(x["cls"]) for x in wds.WebDataset(str(tar), shardshuffle=False)})
        got = {f.stem: index[f.parent.name] for f in out.rglob("*.png")}
        assert got == want  # the index torchvision gives each image is its class id in the shards
        lacking += sum(1 for name in index if not any((out / name).iterdir()))
    assert lacking  # the case under test: a split without some class


def test_imagefolder_indices_hold_past_ten_thousand_classes(tmp_path):
    """A set made elsewhere (a .cls per sample, no names): ids 0, 7 and 10 000. Every id up to the largest gets a
    folder, the prefix as wide as the largest id, so the sorted order is the id order; a re-run gives the same
    tree."""
    members = []
    for i, cls in enumerate((0, 7, 10_000)):
        members += [(f"k{i}.png", png_bytes(drawn_image(i, (16, 16)))), (f"k{i}.cls", str(cls).encode())]
    tar = tar_of(tmp_path / "x.tar", members)
    out = tmp_path / "exp"
    for _ in range(2):
        s = export(str(tar), out, format="imagefolder")
        index = _imagefolder_index(out)
        assert s.classes == len(index) == 10_001
        assert {f.stem: index[f.parent.name] for f in out.rglob("*.png")} == {"k0": 0, "k1": 7, "k2": 10_000}
        assert "10000_10000" in index and "00007_7" in index
    with pytest.raises(UserError, match="folder for every class id"):
        export(str(tar_of(tmp_path / "y.tar", [("k.png", members[0][1]), ("k.cls", b"5000000")])), tmp_path / "y",
               format="imagefolder")


# --------------------------------------------------------------------------- a pipeline's real output paths


@pytest.mark.parametrize("table", [
    "[shard]\nsrc = 'imgs'\nout = 'lnk/../x'\n",
    "[shard]\nsrc = 'imgs'\nout = 'lnk/sh'\n",
    "[pipeline]\ndata_dir = 'lnk/data'\n[shard]\nsrc = 'imgs'\n",
    "[crop]\nkind = 'lego-faces'\nsrc = 'imgs'\ndebug_grid = 'lnk/g.png'\n",
])
def test_a_pipeline_output_through_a_link_is_judged_where_it_lands(table, tmp_path, monkeypatch, capsys):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (elsewhere / "deep").mkdir(parents=True)
    work.mkdir()
    _images(work / "imgs", 2)
    (work / "lnk").symlink_to(elsewhere / "deep")
    monkeypatch.chdir(work)
    (work / "p.toml").write_text(table)
    with pytest.raises(UserError, match="outside the working directory"):
        plan(load(work / "p.toml"), "p.toml", work / "data")
    fails_in_one_line(capsys, "run", "p.toml", "--data-dir", str(work / "data"), words=("allow_outside",))
    assert sorted(elsewhere.rglob("*")) == [elsewhere / "deep"]
    (work / "lnk").unlink()
    (work / "lnk").mkdir()  # the same names as plain folders of the workspace: fine
    plan(load(work / "p.toml"), "p.toml", work / "data")


@pytest.mark.parametrize("value", ["S3://bucket/x", "Gs://bucket/x"])
def test_an_object_store_scheme_in_capitals_is_refused_not_made_a_local_folder(value, tmp_path, monkeypatch,
                                                                               capsys):
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "imgs", 2)
    (tmp_path / "p.toml").write_text(f"[shard]\nsrc = 'imgs'\nout = '{value}'\n")
    with pytest.raises(UserError, match="lower case"):
        plan(load(tmp_path / "p.toml"), "p.toml", tmp_path / "data")
    (tmp_path / "q.toml").write_text(f"[pipeline]\ndata_dir = '{value}'\n[shard]\nsrc = 'imgs'\n")
    with pytest.raises(UserError, match="lower case"):
        plan(load(tmp_path / "q.toml"), "q.toml", tmp_path / "data")
    fails_in_one_line(capsys, "shard", "imgs", "--out", value, words=("--out", "lower case"))
    fails_in_one_line(capsys, "export", "x", "--out", f"{value}.zip", words=("lower case",))
    fails_in_one_line(capsys, "dedupe", "imgs", "--report", "ftp://h/r.jsonl", words=("not a place",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "p.toml", "q.toml"]


@pytest.mark.parametrize("override", ["shard.src=", "shard.out=", "crop.src=", "train.shards=", "shard.src=['']"])
def test_an_empty_path_is_refused_not_taken_as_the_working_folder(override, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = override.split(".")[0]
    extra = {"crop": "kind = 'lego-faces'\n", "train": "kind = 'dcgan'\n"}.get(table, "")
    (tmp_path / "p.toml").write_text(f"[{table}]\n{extra}")
    with pytest.raises(UserError, match=rf"\[{table}\] \w+ is empty"):
        plan(load(tmp_path / "p.toml", [override]), "p.toml", tmp_path / "data")


def test_an_empty_path_on_the_command_line_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "imgs", 2)
    fails_in_one_line(capsys, "shard", "", "--out", "sh", words=("SRC is empty",))
    fails_in_one_line(capsys, "shard", "imgs", "--out=", words=("--out is empty",))
    assert not (tmp_path / "sh").exists()


# --------------------------------------------------------------------------------- names shown, never acted on


def test_shown_escapes_what_a_terminal_would_act_on():
    assert shown("a\x1b[2Jb\x07c\nd\te\rf") == "a\\x1b[2Jb\\x07c\\nd\\te\\rf"
    assert shown("\x9b31m \u202eevil \u2028") == "\\x9b31m \\u202eevil \\u2028"
    assert shown("caf\udce9") == "caf\\xe9"  # a latin-1 byte of a file name, as the byte it is
    assert shown("café ✓ 猫 🐱") == "café ✓ 猫 🐱"
    hostile = "x\x1b]0;t\x07\udcff\n"
    assert shown(shown(hostile)) == shown(hostile)


HOSTILE = [b"evil\x1b[2Jclear", b"tab\there", b"nl\nx", b"bell\x07", b"caf\xe9"]  # folder names: the labels


@pytest.fixture
def hostile_folder(tmp_path) -> Path:
    """An ImageFolder tree whose class folders and files carry control sequences and a latin-1 byte, and an
    unreadable file whose name would retitle the terminal."""
    root = tmp_path / "hostile"
    for i, name in enumerate(HOSTILE):
        _images(Path(os.fsdecode(os.path.join(os.fsencode(root), name))), 1, [b"img\x1b[31m%d.png" % i], start=i)
    (Path(os.fsdecode(os.path.join(os.fsencode(root), HOSTILE[0]))) / "bad\x1b]0;pwned\x07.png").write_bytes(b"no")
    return root


def _plain(text: str) -> None:
    """Nothing in ``text`` but printable characters and the newlines between lines."""
    bad = sorted({c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0
                  or 0xD800 <= ord(c) < 0xE000})
    assert not bad, (bad, text[-2000:])


@pytest.mark.parametrize("command", ["shard", "inspect", "inspect-shards", "dedupe", "crop", "export"])
def test_names_from_data_are_shown_not_acted_on(command, hostile_folder, tmp_path, capsys):
    sh = tmp_path / "sh"
    args = {
        "shard": ("shard", str(hostile_folder), "--out", str(sh), "--label-field", "folder", "--min-shards", "1"),
        "inspect": ("inspect", str(hostile_folder), "--label-field", "folder"),
        "inspect-shards": ("inspect", str(sh)),
        "dedupe": ("dedupe", str(hostile_folder)),
        "crop": ("crop", "lego-faces", "--src", str(hostile_folder), "--out", str(tmp_path / "faces"), "--locator",
                 "layout"),
        "export": ("export", str(tmp_path / "damaged"), "--out", str(tmp_path / "x.zip")),
    }[command]
    if command == "inspect-shards":
        assert gd(capsys, "shard", str(hostile_folder), "--out", str(sh), "--label-field", "folder")[0] == 0
    if command == "export":
        (tmp_path / "damaged").mkdir()
        (tmp_path / "damaged" / "a\x1b[2J.tar").write_bytes(b"x" * 700)  # a tar that is not one
    code, out, err = gd(capsys, *args)
    assert code == (1 if command == "export" else 0), err
    _plain(out + err)
    text = out + err
    if command in ("shard", "inspect", "crop", "dedupe"):
        assert "bad\\x1b]0;pwned\\x07.png" in text  # the unreadable file, named as escapes
    if command.startswith("inspect"):
        assert all(shown(os.fsdecode(name)) in text for name in HOSTILE)  # every label, escaped
    if command == "export":
        assert "a\\x1b[2J.tar" in text


# ------------------------------------------------------------------------ names that are not UTF-8


@pytest.fixture
def latin1_folder(tmp_path) -> Path:
    """Files named in latin-1 (``café.png`` as the bytes ``caf\\xe9.png``), the way an old archive unpacks."""
    return _images(tmp_path / "imgs", 3, [b"caf\xe9.png", b"na\xefve.png", b"plain.png"])


def test_a_name_that_is_not_utf8_survives_shard_dedupe_and_inspect(latin1_folder, tmp_path, capsys):
    sh = tmp_path / "sh"
    code, out, err = gd(capsys, "shard", str(latin1_folder), "--out", str(sh), "--min-shards", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["counts"]["total"] == 3
    files = set()
    for tar in sh.rglob("*.tar"):  # in the set's generation folder
        with tarfile.open(tar) as tf:
            files |= {json.loads(tf.extractfile(m).read())["file"] for m in tf if m.name.endswith(".json")}
    assert files == {"caf\udce9.png", "na\udcefve.png", "plain.png"}  # the names exactly, as Python reads them
    assert {os.fsencode(f) for f in files} == {b"caf\xe9.png", b"na\xefve.png", b"plain.png"}
    code, out, err = gd(capsys, "shard", str(latin1_folder), "--out", str(sh), "--min-shards", "1")
    assert code == 0 and "already" in out, err  # a second run knows the same inputs
    for args in (("inspect", str(latin1_folder)), ("inspect", str(sh), "--json"), ("dedupe", str(latin1_folder))):
        code, out, err = gd(capsys, *args)
        assert code == 0, err
        _plain(out + err)
    (latin1_folder / "dup.png").write_bytes((latin1_folder / "caf\udce9.png").read_bytes())
    report = tmp_path / "r.jsonl"
    code, out, err = gd(capsys, "dedupe", str(latin1_folder), "--report", str(report), "--json")
    assert code == 0, err
    origins = {json.loads(line)["origin"] for line in report.read_text().splitlines()}
    assert str(latin1_folder / "caf\udce9.png") in origins
    assert all(Path(o).exists() for o in origins)  # each origin names its file again


def test_json_keeps_a_file_names_bytes_as_escapes():
    data = json_bytes({"file": "caf\udce9.png", "label": "café"})
    assert data.decode("utf-8") == '{"file": "caf\\udce9.png", "label": "café"}'
    assert json.loads(data) == {"file": "caf\udce9.png", "label": "café"}


# ------------------------------------------------------------------------------------ which limit a path broke


def test_a_path_over_a_limit_says_which_limit(tmp_path, capsys, small_set):
    long_name = tmp_path / ("n" * 300) / "x.zip"
    line = fails_in_one_line(capsys, "export", str(small_set), "--out", str(long_name))
    assert "a name in this path is 300 bytes" in line and "255" in line
    deep = tmp_path.joinpath(*["d" * 200] * 21) / "x.zip"
    line = fails_in_one_line(capsys, "export", str(small_set), "--out", str(deep))
    assert f"this path is {len(os.fsencode(str(deep)))} bytes" in line and "4096" in line
    assert "255 bytes a name" not in line


def test_no_command_writes_into_a_folder_of_another_kind(tmp_path, capsys, monkeypatch):
    """A dataset folder, a shard set and a training run are three kinds of folder: crops, fetches, shards and runs
    written into another kind would leave a folder no reader takes for what it is. One line; nothing written."""
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "imgs", 6)
    assert gd(capsys, "shard", "imgs", "--out", "set", "--name", "s", "--size", "16")[0] == 0
    assert gd(capsys, "shard", "imgs", "--out", "set2", "--name", "s", "--size", "16")[0] == 0
    (tmp_path / "urls.txt").write_text("http://127.0.0.1:9/a.png\n")
    before = sorted(p.name for p in (tmp_path / "set").iterdir())
    for args, words in [
        (("crop", "lego-faces", "--src", "imgs", "--out", "set", "--locator", "layout"), ("holds a shard set",)),
        (("fetch", "urls", "urls.txt", "--name", "u", "--out", "set"), ("holds a shard set",)),
        (("train", "dcgan", "--shards", "set2", "--out", "set", "--device", "cpu"), ("holds a shard set",)),
    ]:
        fails_in_one_line(capsys, *args, words=words)
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == before
    assert gd(capsys, "crop", "lego-faces", "--src", "imgs", "--out", "heads", "--locator", "layout",
              "--size", "16")[0] == 0
    fails_in_one_line(capsys, "shard", "imgs", "--out", "heads", "--name", "h", words=("holds a dataset folder",))
    fails_in_one_line(capsys, "train", "dcgan", "--shards", "set", "--out", "heads", "--device", "cpu",
                      words=("holds a dataset folder",))
    # crops into a fetch's dataset folder would mix the originals with their crops
    from gandata.datasets import Dataset

    with Dataset.create(tmp_path / "raw") as ds:
        ds.add("a", png_bytes(drawn_image(1)), "png", {"width": 64, "height": 64, "source": "urls"})
        ds.write_stats({"stage": "fetch urls"})
    fails_in_one_line(capsys, "crop", "lego-faces", "--src", "imgs", "--out", "raw", "--locator", "layout",
                      words=("holds the images of 'fetch urls'",))
