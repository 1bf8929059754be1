"""Where a path really leads, judged as the kernel will write it: the symbolic links of the part that exists
followed, the rest (not there yet: made by the command) folded as written. Two rules stand on it — no command
removes or overwrites its own input (:func:`refuse_overlap`: an output that is an input, lies inside one or holds
one is refused in one line), and a pipeline file writes only inside its workspace (:func:`real`, in
:mod:`gandata.pipeline`) — so that ``lnk/../x``, a folder replaced by a link, or a second name of the same folder
cannot get round either.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import braceexpand

from .errors import UserError
from .storage import is_url

HOW = {"is": "is", "inside": "lies inside", "holds": "holds"}


def real(path: str | os.PathLike) -> str:
    """The absolute path the kernel reaches for a local ``path`` (``~`` expanded): links followed as far as the
    path exists (a link to a link, ``lnk/..`` as the link's parent), the rest as written."""
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def _place(path: str | os.PathLike) -> str:
    """A path or an object-store URL as one comparable text: a local path made :func:`real`; a URL's scheme in
    lower case, without a trailing slash (``file://`` is a local path)."""
    text = os.fspath(path)
    if text.lower().startswith("file://"):
        return real(text[len("file://"):])
    if is_url(text):
        return text.rstrip("/")
    return real(text)


def _within(inner: str, outer: str) -> bool:
    return inner.startswith(outer.rstrip("/") + "/")


def overlap(a: str | os.PathLike, b: str | os.PathLike) -> str | None:
    """How ``a`` stands to ``b``: ``"is"`` (the same place, a link or a hard link to it included), ``"inside"``
    (``a`` lies inside ``b``), ``"holds"`` (``b`` lies inside ``a``), or None."""
    pa, pb = _place(a), _place(b)
    if pa == pb:
        return "is"
    if _within(pa, pb):
        return "inside"
    if _within(pb, pa):
        return "holds"
    if not is_url(pa) and not is_url(pb):
        try:
            if os.path.samefile(pa, pb):  # two names of one file (a hard link)
                return "is"
        except OSError:
            pass
    return None


def places(spec: Any) -> list[str]:
    """The places an input names: a path or object-store URL itself; a brace pattern's every name; each of several
    specs joined with ``::``; nothing for what is not a place a command could write (``pipe:`` commands,
    ``http(s)://`` addresses, None)."""
    if spec is None:
        return []
    text = os.fspath(spec) if not isinstance(spec, str) else spec
    if not text or text.startswith("pipe:"):
        return []
    return [name for part in text.split("::") if part and not part.lower().startswith(("http://", "https://"))
            for name in (braceexpand.braceexpand(part) if "{" in part else [part])]


def refuse_overlap(output: Any, output_name: str, inputs: Iterable[tuple[Any, str]]) -> None:
    """One line when the ``output`` (named as the user wrote it: ``--out``, ``[shard] out``) is an input, lies inside
    one or holds one (``inputs``: (spec, how the user named it), each spec a path, URL or brace pattern, None
    skipped): a command never removes or overwrites what it reads."""
    if output is None or (isinstance(output, str) and not output):
        return
    for spec, name in inputs:
        for place in places(spec):
            how = overlap(output, place)
            if how is not None:
                which = f"{name} {spec}" if os.fspath(spec) == place else f"{name} {spec} ({place})"
                raise UserError(f"{output_name} {output} {HOW[how]} the input {which}; a command never writes over "
                                f"its own input: give {output_name} a place outside it")


# what marks each kind of output folder: a dataset folder (fetch, crop), a shard set (shard), a training run (train)
KINDS = {"dataset folder": ("manifest.jsonl",), "shard set": ("dataset.json",),
         "training run": ("options.json", "summary.json")}


def refuse_other_kind(output: Any, kind: str, output_name: str) -> None:
    """One line when the local folder ``output`` already holds another kind of output than the ``kind`` the command
    writes (:data:`KINDS`): crops written into a shard set, a shard set into a dataset folder, a run into either
    would leave a folder that no reader takes for what it is, with the other's files mixed in."""
    if output is None or is_url(output) or not os.path.isdir(output):
        return
    for other, marks in KINDS.items():
        mark = next((m for m in marks if os.path.exists(os.path.join(output, m))), None)
        if other != kind and mark:
            raise UserError(f"{output_name} {output} holds a {other} ({mark}), not a {kind}: give {output_name} "
                            "another folder")

