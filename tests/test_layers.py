"""The house's layers, read from the code: the front end (cli, stages, pipeline, demo) stands on the library and the
trainers, and nothing below imports it back, lazily or not; no module imports itself in a circle; the declarations
are the low layer every default comes from; docs/architecture.md lists every module there is."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from gandata import declarations as D
from gandata.options import Declaration

ROOT = Path(__file__).resolve().parents[1]
FRONT = {"gandata.cli", "gandata.stages", "gandata.pipeline", "gandata.demo", "gandata.__main__"}


def _modules() -> dict[str, tuple[Path, list[str]]]:
    """Every module of the package (trainers/ installs as gandata.trainers): name → (file, its package)."""
    found = {}
    for p in sorted([*(ROOT / "gandata").rglob("*.py"), *(ROOT / "trainers").rglob("*.py")]):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "trainers":
            parts = ["gandata", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
            package = parts
        else:
            package = parts[:-1]
        found[".".join(parts)] = (p, package)
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The package's modules ``name`` imports anywhere in its file (at the top, in a function, under TYPE_CHECKING)."""
    path, package = MODULES[name]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            out |= {t for t in (target, *(f"{target}.{a.name}" for a in node.names)) if t in MODULES}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
    return out - {name}


GRAPH = {m: _imports(m) for m in MODULES}


def test_the_graph_is_read_right():
    """A check of the checker: imports it must see, in each form the code uses."""
    assert "gandata.stages" in GRAPH["gandata.cli"]  # from .stages import …
    assert "gandata.shardset" in GRAPH["gandata.trainers.train"]  # from .. import shardset
    assert "gandata.trainers.kinds" in GRAPH["gandata.declarations"]  # from .trainers.kinds import …
    assert "gandata.crop" in GRAPH["gandata.stages"]  # a lazy import inside a function


def test_nothing_below_the_front_end_imports_it():
    up = {m: sorted(GRAPH[m] & FRONT) for m in MODULES if m not in FRONT and GRAPH[m] & FRONT}
    assert not up, f"modules below the front end import it back: {up}"


def test_no_module_imports_itself_in_a_circle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_declarations_are_the_low_layer():
    """They import only the option machinery, object-store paths (the URL rule), errors and the trainers' kinds —
    never a module that does work, so every library module can take its defaults from them."""
    low = {"gandata", "gandata.options", "gandata.storage", "gandata.errors", "gandata.fileio",
           "gandata.trainers", "gandata.trainers.kinds"}
    reach, todo = set(), ["gandata.declarations"]
    while todo:
        for dep in GRAPH[todo.pop()] - reach:
            reach.add(dep)
            todo.append(dep)
    assert reach <= low, sorted(reach - low)


def test_architecture_lists_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"`([a-z_]+(?:/[a-z_]+)?\.py)`", text))
    expected = set()
    for path, _ in MODULES.values():
        rel = path.relative_to(ROOT)
        if rel.name == "__init__.py" and rel.parent.name in ("gandata", "trainers"):
            continue  # the packages themselves
        expected.add(str(rel.relative_to("gandata")) if rel.parts[0] == "gandata" else str(rel))
    missing = sorted(expected - listed)
    assert not missing, f"docs/architecture.md does not list {missing}"


# ------------------------------------------------------------------------------ one default in one place


def _library() -> list[tuple[Declaration, object]]:
    """Each command's library entry points: option objects (made with the command's required values) and
    functions, whose parameters carry the declared names."""
    from gandata.trainers.metrics import evaluate
    from gandata.trainers.options import TrainOptions
    from gandata.trainers.sampling import sample

    from gandata.crop import CropOptions, crop
    from gandata.dedupe import dedupe
    from gandata.export import export
    from gandata.inspection import inspect_path
    from gandata.shard import ShardOptions, shard
    from gandata.sources.bitmoji import fetch_bitmoji
    from gandata.sources.bricklink import fetch_bricklink
    from gandata.sources.rebrickable import fetch_rebrickable
    from gandata.sources.urls import fetch_urls

    pairs = [(D.SHARD, ShardOptions), (D.SHARD, shard), (D.CROP_ANIME, CropOptions), (D.CROP_LEGO, CropOptions),
             (D.CROP_ANIME, crop), (D.CROP_LEGO, crop), (D.DEDUPE, dedupe), (D.INSPECT, inspect_path),
             (D.EXPORT, export), (D.FETCH_BITMOJI, fetch_bitmoji), (D.FETCH_BRICKLINK, fetch_bricklink),
             (D.FETCH_REBRICKABLE, fetch_rebrickable), (D.FETCH_URLS, fetch_urls), (D.EVAL, evaluate),
             (D.SAMPLE, sample)]
    return pairs + [(d, TrainOptions) for d in D.TRAIN.values()]


@pytest.mark.parametrize("declaration, entry", _library(), ids=lambda x: " ".join(x.command)
                         if isinstance(x, Declaration) else getattr(x, "__name__", "?"))
def test_every_default_is_the_same_on_the_command_line_in_a_pipeline_and_in_the_library(declaration, entry):
    from gandata.options import LIST, PATH_TYPE
    from gandata.stages import library_options

    filler = {str: "x", PATH_TYPE: "x", LIST: ["x"], int: 1, float: 1.0}
    required = {o.key: filler[o.type] for o in declaration.options if o.required}
    cli = declaration.check(dict(required), "cli")
    piped = declaration.check({k: v for k, v in required.items() if any(o.key == k and o.pipeline
                                                                      for o in declaration.options)}, "p")
    for o in declaration.options:
        if o.pipeline and o.cli and not o.required:
            assert cli[o.key] == piped[o.key] == o.default, o.key
    if dataclasses.is_dataclass(entry):  # an options object: made from nothing, and from the command line's values
        more = {"lego": declaration.command == ("crop", "lego-faces")} if "lego" in {
            f.name for f in dataclasses.fields(entry)} else {}
        if declaration.command[0] == "train":
            more = {"kind": declaration.command[1], "shards": "s", "out": "o"}
        alone = entry(**more)
        from_cli = library_options(entry, {**cli, **more})
        assert dataclasses.asdict(alone) == dataclasses.asdict(from_cli)
        for f in dataclasses.fields(entry):
            if any(o.key == f.name and not o.required for o in declaration.options) and cli.get(f.name) is not None:
                assert getattr(alone, f.name) == cli[f.name], f.name
        return
    params = inspect.signature(entry).parameters
    shared = [o for o in declaration.options if o.key in params and not o.required]
    assert shared, "the library function takes none of the declared options"
    for o in shared:
        default = params[o.key].default
        if default is not inspect.Parameter.empty:
            assert default == o.default, f"{o.key}: library {default!r}, declared {o.default!r}"


def test_crop_min_face_is_the_command_s_own():
    from gandata.crop import CropOptions

    assert CropOptions(lego=True).min_face == D.CROP_LEGO.option("min_face").default == 24
    assert CropOptions().min_face == D.CROP_ANIME.option("min_face").default == 64
