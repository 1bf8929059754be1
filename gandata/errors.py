"""The one exception type that reaches the user as a single line instead of a traceback, and how such a line names an
option.

A message that names an option — a hint (``use --maxcount 47``) or the option a bad value came from (``--out x: …``)
— is written with :func:`hint` or :func:`named`, which give the form that works where the line will be shown: the
command line's flags by default; inside a pipeline stage (:func:`naming`, set by :func:`gandata.pipeline.run`) the
pipeline's ``--set shard.maxcount=47`` or ``[shard] maxcount = 47``. The library cannot know where it runs; the front
end says so, and no message is rewritten after it is made.
"""

from __future__ import annotations

import contextlib
import contextvars
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any


class UserError(Exception):
    """Bad input or a state the user can fix. The message says what was wrong and what to do."""


class OptionError(UserError):
    """A malformed command line — a value an option (or a pipeline key) does not take, an unknown command: a usage
    error, exit status 2 on the command line."""


class FormatError(UserError):
    """A file whose content is not what its format says — a shard set's ``dataset.json``, a checkpoint, a shard's
    members (``.cls``, images), a run's summary — validated whole when it is read; the message names the file and
    the field."""


def flag_of(key: str) -> str:
    """The command-line flag of an option key: ``val_fraction`` → ``--val-fraction``."""
    return "--" + key.replace("_", "-")


@dataclass(frozen=True)
class Naming:
    """Where a message that names an option will be shown. ``table`` None: the command line (``--maxcount 47``).
    Otherwise a pipeline whose stage ``table`` is running, with the stages ``tables``; ``form`` says how a value is
    given there: ``"set"`` (``gandata run … --set shard.maxcount=47``) or ``"file"`` (``[shard] maxcount = 47`` in
    the pipeline file: where no command line follows, as in the demo). ``only``: the stages this run is limited to
    (``--only``); a value given to a stage left out does nothing until that stage runs, so the hint says to run it."""

    table: str | None = None
    tables: tuple[str, ...] = ()
    form: str = "set"
    only: tuple[str, ...] = ()  # the stages ``--only`` runs (none: all): a value for another one says to run it


COMMAND_LINE = Naming()
_NAMING: contextvars.ContextVar[Naming | None] = contextvars.ContextVar("naming", default=None)


def _where() -> Naming:
    return _NAMING.get() or COMMAND_LINE


@contextlib.contextmanager
def naming(where: Naming) -> Iterator[None]:
    """Messages made inside this block name options as ``where`` has them (:func:`hint`, :func:`named`)."""
    token = _NAMING.set(where)
    try:
        yield
    finally:
        _NAMING.reset(token)


def _table_of(command: str | None) -> str | None:
    """The pipeline table an option of ``command`` is given in (None: the stage running), or None when the running
    pipeline has no such stage."""
    where = _where()
    if where.table is None:
        return None
    if command is None:
        return where.table
    table = command.split()[0]
    return table if table in where.tables else None


def _cli_value(value: Any) -> str:
    return shlex.quote(str(value))


def _flag(key: str, value: Any, shown: Callable[[Any], str]) -> str:
    """``--key value`` on the command line; a switch alone (``--draft``, ``--no-draft``)."""
    if isinstance(value, bool):
        return flag_of(key) if value else "--no-" + flag_of(key)[2:]
    return flag_of(key) + ("" if value is None else " " + shown(value))


def _toml_value(value: Any) -> str:
    """A value as a pipeline file writes it: numbers bare, true/false, text quoted — a placeholder (FILE, N)
    bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    return text if text.isupper() and " " not in text else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hint(key: str, value: Any = None, command: str | None = None, args: Sequence[str] = (),
         given: dict[str, Any] | None = None) -> str:
    """What to type to give option ``key`` (with ``value``: a number, text, True/False, or a placeholder such as
    ``"FILE"``), in the form that works where the message is shown: ``--locator layout`` (``--no-draft`` for False)
    on the command line; in a pipeline ``--set crop.locator=layout`` (``gandata run``) or ``[crop] locator =
    "layout"`` (the file). ``command`` names another command to run (``"shard"``: ``gandata shard --size 64``; in a
    pipeline with a ``[shard]`` stage, that stage's key); without it, ``key`` is an option of the stage running.

    A command that must be given whole to do what the message means (the one that made a shard set, to make it
    again at another size) has its arguments in ``args``, standing for its placeholders (``"shard SRC"``: the
    sources), and its other options in ``given`` (``{"out": "data/x/shards"}``): on the command line they are
    written out before ``key``; a pipeline's table holds them already. A stage that ``--only`` leaves out is named
    to be run too (``--set shard.size=64 --only shard``)."""
    table = _table_of(command)
    if table is None:
        text = _flag(key, value, _cli_value)
        if not command:
            return text
        words = command.split()
        if args:
            words = [*(w for w in words if not w.isupper()), *map(_cli_value, args)]
        words += [_flag(k, v, _cli_value) for k, v in (given or {}).items() if k != key and v is not None]
        return f"gandata {' '.join(words)} {text}"
    if value is None:
        return f"[{table}] {key}"
    where = _where()
    run_it = bool(where.only) and table not in where.only
    if where.form == "file":
        return f"[{table}] {key} = {_toml_value(value)}" + (f" (and run [{table}])" if run_it else "")
    setting = str(value).lower() if isinstance(value, bool) else str(value)
    return "--set " + shlex.quote(f"{table}.{key}={setting}") + (f" --only {table}" if run_it else "")


def named(key: str, value: Any = None) -> str:
    """Option ``key`` of the stage running as the user gave it (``value``: what was given, shown as it is): ``--out
    runs/x`` on the command line, ``[train] out = 'runs/x'`` in a pipeline — the subject of an error line."""
    table = _table_of(None)
    if table is None:
        return _flag(key, value, str)
    if value is None:
        return f"[{table}] {key}"
    return f"[{table}] {key} = " + (_toml_value(value) if isinstance(value, (bool, int, float)) else repr(str(value)))
