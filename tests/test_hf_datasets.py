"""Hugging Face ``datasets`` reads a labelled shard folder, and the documented recipe (docs/commands.md, the block
after ``<!-- hf-recipe -->``) gives ``cls`` the class names of ``dataset.json`` — run here as written, on a real
set, with datasets' cache in the test's folder and the hub offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import labelled_set

DOCS = Path(__file__).resolve().parents[1] / "docs" / "commands.md"


def recipe() -> str:
    text = DOCS.read_text()
    found = re.search(r"<!-- hf-recipe -->\s*```python\n(.*?)```", text, re.S)
    assert found, "docs/commands.md lost its hf-recipe block"
    return found.group(1)


def test_the_documented_recipe_gives_cls_its_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    shards = labelled_set(tmp_path, 40, names=("zebra", "ant", "moth", "beetle"), min_shards=2, maxcount=12)
    info = json.loads((shards / "dataset.json").read_text())
    code = recipe().replace("data/minifigs/shards", str(shards))
    scope: dict = {}
    exec(code, scope)
    ds = scope["ds"]
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
