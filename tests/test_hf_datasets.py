"""Hugging Face ``datasets`` reads a shard folder, and the documented recipe (docs/commands.md, the block after
``<!-- hf-recipe -->``) gives ``cls`` the class names of ``dataset.json`` — run here as written, on a real labelled
set and on one without labels, with datasets' cache in the test's folder and the hub offline. The folder it reads is
one a documented command writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import labelled_set, write_drawn_folder

DOCS = Path(__file__).resolve().parents[1] / "docs" / "commands.md"
READS = "data/bricklink/shards"  # where `gandata run lego-faces-64` writes its labelled set


def recipe() -> str:
    text = DOCS.read_text()
    found = re.search(r"<!-- hf-recipe -->\s*```python\n(.*?)```", text, re.S)
    assert found, "docs/commands.md lost its hf-recipe block"
    return found.group(1)


@pytest.fixture
def datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    return datasets


def run_recipe(shards: Path):
    code = recipe()
    assert code.count(READS) == 2, "the recipe reads another folder than the one the test checks is made"
    scope: dict = {}
    exec(code.replace(READS, str(shards)), scope)
    return scope["ds"]


def test_the_recipe_reads_a_folder_a_documented_command_makes():
    from gandata.pipeline import load, plan

    head, steps = plan(load("lego-faces-64"))
    by_table = {s.table: s for s in steps}
    assert "dataset" not in head and by_table["fetch"].stage.select == ("source", "bricklink")  # dataset: bricklink
    shard = by_table["shard"].values
    assert shard["out"] is None and shard["label_field"]  # labelled, into DATA/bricklink/shards
    assert "gandata run lego-faces-64" in DOCS.read_text()


def test_the_documented_recipe_gives_cls_its_names(tmp_path, datasets):
    shards = labelled_set(tmp_path, 40, names=("zebra", "ant", "moth", "beetle"), min_shards=2, maxcount=12)
    info = json.loads((shards / "dataset.json").read_text())
    ds = run_recipe(shards)
    names = info["labels"]["names"]
    assert names == ["ant", "beetle", "moth", "zebra"]
    assert {"train": ds["train"].num_rows, "val": ds["validation"].num_rows} == \
        {sp: info["counts"][sp] for sp in ("train", "val")}
    for split in ("train", "validation"):
        feature = ds[split].features["cls"]
        assert isinstance(feature, datasets.ClassLabel) and feature.names == names
        for row in ds[split]:
            assert feature.int2str(row["cls"]) == row["json"]["label"]  # the name each sample's JSON holds
            assert row["png"].size == (32, 32)


def test_the_documented_recipe_reads_a_set_without_labels(tmp_path, datasets):
    from gandata.shard import ShardOptions, shard

    write_drawn_folder(tmp_path / "imgs", 12, size=(40, 40))
    shard([tmp_path / "imgs"], tmp_path / "set", "set", ShardOptions(size=32, val_fraction=0.0, min_shards=1))
    assert json.loads((tmp_path / "set" / "dataset.json").read_text())["labels"] is None
    ds = run_recipe(tmp_path / "set")
    assert ds["train"].num_rows == 12 and "cls" not in ds["train"].features
