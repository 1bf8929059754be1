"""A stage's options, declared once: name, type, default, range or choices, help. The command line
(:mod:`gandata.cli`) and pipeline files (:mod:`gandata.pipeline`) are both derived from these declarations
(:mod:`gandata.stages`), and both check values with :meth:`Opt.check`, so a pipeline file can never do what the
command line refuses, and an error names the option the way the user wrote it (``--val-fraction`` on the command
line, ``[shard] val_fraction`` in a pipeline file).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OptionError, UserError
from .storage import is_url

PATH_TYPE = Path
LIST = "list"  # a list of strings (a single string is taken as a list of one)


@dataclass(frozen=True)
class Opt:
    key: str  # what the user writes: the pipeline key, and the command-line flag --key-with-dashes
    type: Any  # bool, int, float, str, Path or LIST
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound
    below: float | None = None  # exclusive upper bound
    required: bool = False  # on the command line (a pipeline stage may take it from the stage before)
    argument: bool = False  # positional on the command line
    flags: tuple[str, ...] = ()  # command-line names when not --key (e.g. ("--rate", "--image-rate"))
    envvar: str | None = None
    cli: bool = True  # offered on the command line
    pipeline: bool = True  # offered in pipeline files
    validate: Callable[[Any], Any] | None = (
        None  # raises ValueError with the reason (e.g. a colour that does not parse)
    )
    output: bool = False  # a place the stage writes (a pipeline file may name one only inside its workspace)
    metavar: str | None = None  # what --help shows for its value (default from the type: N, NUMBER, TEXT, PATH)

    @property
    def flag(self) -> str:
        return self.flags[0] if self.flags else "--" + self.key.replace("_", "-")

    def name(self, where: str) -> str:
        """How the user wrote this option: ``--size`` / ``SRC`` on the command line, ``[shard] size`` in a file."""
        if where == "cli":
            return self.key.upper() if self.argument else self.flag
        return f"[{where}] {self.key}"

    def expects(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        kind = {bool: "true or false", int: "a whole number", float: "a number", str: "text", PATH_TYPE: "a path",
                LIST: "a list of text values"}[self.type]
        def num(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else f"{v:g}"

        bounds = []
        if self.min is not None:
            bounds.append(f"at least {num(self.min)}")
        if self.above is not None:
            bounds.append(f"above {num(self.above)}")
        if self.max is not None:
            bounds.append(f"at most {num(self.max)}")
        if self.below is not None:
            bounds.append(f"below {num(self.below)}")
        return kind + (" " + " and ".join(bounds) if bounds else "")

    def check(self, value: Any, where: str) -> Any:
        """``value`` converted to the declared type, or a :class:`UserError` naming the option as ``where`` has it
        (``"cli"`` or a pipeline table's name)."""
        if value is None:
            if self.required and where == "cli":
                raise OptionError(f"{self.name(where)} is required")
            return None
        error = OptionError if where == "cli" else UserError  # the command line's usage error (exit 2); a file's: 1
        bad = error(f"{self.name(where)} must be {self.expects()} (got {_shown(value)})")
        t = self.type
        if t is bool:
            if not isinstance(value, bool):
                raise bad
        elif t is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad
        elif t is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad  # nan passes every comparison with a bound; inf is no length, rate or share
            value = float(value)
        elif t is str:
            if not isinstance(value, str):
                raise bad
        elif t is PATH_TYPE:
            if not isinstance(value, (str, Path)) or not str(value):
                raise bad
            value = value if is_url(value) else Path(value).expanduser()  # s3://… is not a local path
        elif t == LIST:
            if isinstance(value, (str, Path)):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, Path)) for v in value):
                raise bad
            value = [str(Path(v).expanduser()) if str(v).startswith("~") else str(v) for v in value]
        if self.choices and value not in self.choices:
            raise bad
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if ((self.min is not None and value < self.min) or (self.max is not None and value > self.max)
                    or (self.above is not None and value <= self.above)
                    or (self.below is not None and value >= self.below)):
                raise bad
        if self.validate is not None:
            try:
                self.validate(value)
            except ValueError as e:
                raise error(f"{self.name(where)}: {e}") from None
        return value


def _shown(value: Any) -> str:
    """A value as an error line shows it: at most 80 characters of its repr."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def values(options: tuple[Opt, ...], given: dict[str, Any], where: str) -> dict[str, Any]:
    """Every option of a stage, checked: given values converted, the rest at their defaults. Unknown keys are
    refused with the list of known ones (``where`` names the pipeline table, or ``"cli"``)."""
    known = {o.key: o for o in options if (o.cli if where == "cli" else o.pipeline)}
    for key in given:
        if key.replace("-", "_") not in known:
            raise UserError(f"[{where}] has no option {key!r}; it takes {', '.join(sorted(known))}")
    given = {k.replace("-", "_"): v for k, v in given.items()}
    return {key: o.check(given[key], where) if key in given else o.default for key, o in known.items()}


def check_declared(obj: Any, options: tuple[Opt, ...], error: type[UserError] = UserError) -> None:
    """A library call's options (a dataclass whose fields carry the declared names, or a dict of a function's
    arguments) checked by the stage's declaration — the same check the command line and pipeline files make, so that
    the library repeats none of it. Fields that are not declared, and values left None, are not checked here. The
    error names the option as the command line does."""
    for o in options:
        value = obj.get(o.key) if isinstance(obj, dict) else getattr(obj, o.key, None)
        if value is None or o.argument:
            continue
        try:
            o.check(value, "cli")
        except UserError as e:
            raise error(str(e)) from None
