"""One module per source: what to request and how to read the answer. Sources never open connections: they
produce :class:`gandata.fetch.Job` objects for the shared engine. Their addresses live in ``manifests/*.toml``."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..declarations import ENGINE_KEYS, declared
from ..errors import UserError, hint
from ..options import check_call
from ..textfiles import read_text

if TYPE_CHECKING:
    from ..fetch import FetchOptions

# the checkout's manifests/ (editable installs, tests), else the copy a wheel installs as gandata/manifests
_CHECKOUT = Path(__file__).resolve().parents[2] / "manifests"
MANIFESTS = _CHECKOUT if (_CHECKOUT / "bitmoji.toml").exists() else Path(__file__).resolve().parents[1] / "manifests"


def load_manifest(name: str, path: str | os.PathLike | None = None) -> tuple[dict, str]:
    """The source description ``manifests/<name>.toml`` (or the file given), and the path it was read from.

    ``$GANDATA_MANIFESTS`` names another folder of manifests."""
    if path is None:
        folder = Path(os.environ.get("GANDATA_MANIFESTS", MANIFESTS))
        path = folder / f"{name}.toml"
    path = Path(path)
    try:
        manifest = tomllib.loads(read_text(path, f"the manifest {path}"))
        check_manifest(name, manifest, str(path))
        return manifest, str(path)
    except FileNotFoundError:
        raise UserError(f"the {name} manifest {path} is missing; give one with {hint('manifest', 'FILE')}") from None
    except OSError as e:
        raise UserError(f"cannot read the manifest {path} ({e.strerror}); give another with "
                        f"{hint('manifest', 'FILE')}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(
            f"the manifest {path} is not valid TOML ({e}); fix it or give another with {hint('manifest', 'FILE')}"
        ) from None


@dataclass
class Source:
    """What every network source shares besides its own parameters, checked once by its declaration
    (``gandata fetch NAME``): its manifest (read and checked), ``--base-url``, and the fetch engine's options — the
    manifest's politeness with the caller's overrides put in."""

    name: str
    manifest: dict
    manifest_path: str
    base_url: str | None
    engine: FetchOptions
    own: dict[str, Any]  # the source's own parameters, checked (and converted) by the same declaration

    @classmethod
    def open(cls, source: str, manifest: str | os.PathLike | None = None, base_url: str | None = None,
             overrides: dict | None = None, engine_of: Callable[[dict], FetchOptions] | None = None,
             has_manifest: bool = True, **own: Any) -> Source:
        """``overrides``: FetchOptions fields (the declared ones — --rate, --retries … — are checked as on the
        command line); ``engine_of``: the engine's options from the manifest (default :func:`politeness`); ``own``: the
        source's other parameters (``count``, ``limit``, ``delay`` …), checked by its declaration too. A source
        without a manifest (``has_manifest=False``: a user's URL list) starts from the engine's defaults."""
        from ..fetch import FetchOptions, with_overrides

        overrides = dict(overrides or {})
        declared_engine = {k: overrides[k] for k in ENGINE_KEYS if k in overrides}
        checked = check_call(declared("fetch", source), **{**declared_engine, **own, "base_url": base_url})
        overrides.update({k: checked[k] for k in declared_engine})
        data, path = load_manifest(source, manifest) if has_manifest else ({}, "")
        options = with_overrides((engine_of or (politeness if has_manifest else lambda m: FetchOptions()))(data),
                                 overrides)
        return cls(source, data, path, base_url, options, {k: checked[k] for k in own})


def politeness(manifest: dict) -> FetchOptions:
    """The engine options a manifest's ``[politeness]`` table sets (concurrency, rate, retries, timeout)."""
    from ..fetch import FetchOptions

    p = manifest.get("politeness", {})
    conc = int(p.get("concurrency", 8))
    return FetchOptions(concurrency=conc, per_host=conc, rate=p.get("rate"), retries=int(p.get("retries", 5)),
                        timeout=float(p.get("timeout", 30.0)), max_wait=float(p.get("max_wait", 900.0)))


# ------------------------------------------------------------------------------------------- manifest schemas
# Every key a manifest may hold, with its type; a manifest is checked whole when it is loaded, so a bad value is one
# line naming the file, the table and the key — never a traceback in the middle of a crawl.

_FIELD = re.compile(r"{([^{}]*)}")


def _url(*fields: str):
    """An http(s) address template whose {placeholders} are among ``fields``."""

    def check(value: object) -> str | None:
        if not isinstance(value, str):
            return "must be an address (text)"
        if not re.match(r"^https?://[^/{}]+", value):
            return "must be an http(s) address with a host"
        unknown = [f for f in _FIELD.findall(value) if f not in fields]
        if unknown:
            return (f"has the placeholder {{{unknown[0]}}}; it may use "
                    + (", ".join(f"{{{f}}}" for f in fields) if fields else "none"))
        return None

    return check


def _number(low: float = 0.0, high: float | None = None, integer: bool = False):
    def check(value: object) -> str | None:
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or value < low or (high is not None and value > high):
            what = "a whole number" if integer else "a number"
            return f"must be {what} from {low:g}" + (f" to {high:g}" if high is not None else " up")
        return None

    return check


def _list(item):
    def check(value: object) -> str | None:
        if not isinstance(value, list):
            return "must be a list"
        for v in value:
            problem = item(v)
            if problem:
                return f"holds {v!r}, which {problem}"
        return None

    return check


def _text(value: object) -> str | None:
    return None if isinstance(value, str) and value else "must be text"


def _map(value_check):
    def check(value: object) -> str | None:
        if not isinstance(value, dict):
            return "must be a table"
        for k, v in value.items():
            problem = value_check(v)
            if problem:
                return f"[{k}] {problem}"
        return None

    return check


_POLITENESS = {"concurrency": _number(1, integer=True), "rate": _number(0), "retries": _number(0, 100, integer=True),
               "timeout": _number(0.1), "max_wait": _number(0)}
_AVATAR_FIELDS = ("view", "scale", "gender", "style", "traits", "outfit")
SCHEMAS: dict[str, dict[str, dict]] = {
    "bitmoji": {
        "catalogues": {"traits": _url(), "templates": _url()},
        "avatars": {"url": _url(*_AVATAR_FIELDS), "fallback_urls": _list(_url(*_AVATAR_FIELDS)),
                    "scale": _number(1, 10, integer=True), "styles": _list(_number(1, integer=True)),
                    "genders": _list(_number(1, integer=True)), "none": _map(_number(0, 1))},
        "comics": {"query": _map(_text)},
        "politeness": _POLITENESS,
    },
    "bricklink": {
        "site": {"list_url": _url("cat", "page"), "list_all_url": _url("page"), "item_url": _url("no")},
        "images": {"urls": _list(_url("no"))},
        "markers": {"throttle": _list(_text), "challenge": _list(_text)},
        "politeness": {"delay": _number(0), "throttle_wait": _number(0), "image_concurrency": _number(1, integer=True),
                       "image_rate": _number(0), "retries": _number(0, 100, integer=True), "timeout": _number(0.1),
                       "max_wait": _number(0)},
    },
    "rebrickable": {"catalogues": {"minifigs": _url()}, "politeness": _POLITENESS},
}
REQUIRED = {"bitmoji": {"catalogues": ("traits", "templates"), "avatars": ("url",)},
            "bricklink": {"site": ("list_url", "list_all_url", "item_url"), "images": ("urls",)},
            "rebrickable": {"catalogues": ("minifigs",)}}


def check_manifest(name: str, manifest: dict, where: str) -> None:
    """A :class:`UserError` naming the first bad table, key or value of a ``name`` manifest."""
    schema = SCHEMAS.get(name)
    if schema is None:
        return

    def bad(what: str) -> UserError:
        return UserError(f"the manifest {where}: {what}; fix it or give another with {hint('manifest', 'FILE')}")

    for table, value in manifest.items():
        if table not in schema:
            raise bad(f"unknown table [{table}]; a {name} manifest has {', '.join(f'[{t}]' for t in schema)}")
        if not isinstance(value, dict):
            raise bad(f"{table} must be a table ([{table}])")
        for key, v in value.items():
            if key not in schema[table]:
                raise bad(f"[{table}] has no key {key!r}; it takes {', '.join(schema[table])}")
            problem = schema[table][key](v)
            if problem:
                raise bad(f"[{table}] {key} {problem}")
    for table, keys in REQUIRED.get(name, {}).items():
        for key in keys:
            if key not in manifest.get(table, {}):
                raise bad(f"[{table}] {key} is missing")
