"""How an option is declared and checked: :class:`Opt` (name, type, default, range or choices, help),
:class:`Declaration` (a command's options and the rules between them) and :class:`Declared` (a library's options
object, whose defaults and checks are its command's declaration). The declarations themselves are data in
:mod:`gandata.declarations`; the command line (:mod:`gandata.cli`), pipeline files (:mod:`gandata.pipeline`) and the
library's option objects all check values with :meth:`Declaration.check`, so a pipeline file can never do what the
command line refuses, a library call gets the command line's defaults, and an error names the option the way the
user wrote it (``--val-fraction`` on the command line, ``[shard] val_fraction`` in a pipeline file).
The library's own messages name options with :func:`gandata.errors.hint` and :func:`~gandata.errors.named`, in the
form that works where they are shown.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from .errors import OptionError, UserError, flag_of
from .storage import is_url

PATH_TYPE = Path
LIST = "list"  # a list of strings (a single string is taken as a list of one)
COLOR = "colour"  # a colour name, #rrggbb or r,g,b: checked into a Color


class Color(str):
    """A colour as the user wrote it (``"white"``, ``"#102030"``, ``"16,32,48"``: what records and summaries show),
    parsed once, when it is checked: ``.rgb`` is what runs."""

    rgb: tuple[int, int, int]

    def __new__(cls, text: str, rgb: tuple[int, int, int]) -> Color:
        self = super().__new__(cls, text)
        self.rgb = rgb
        return self

    def __reduce__(self):  # copies and pickles (dataclasses.asdict, Ray tasks) keep the parsed value
        return Color, (str(self), self.rgb)

    @classmethod
    def parse(cls, value: Any) -> Color:
        """``"#fff"``, ``"white"``, ``"255,255,255"`` → a Color; ValueError with the reason."""
        if isinstance(value, Color):
            return value
        text = str(value)
        try:
            if "," in text:
                rgb = tuple(int(v) for v in text.split(","))
            else:
                from PIL import ImageColor  # not at import: `gandata --help` loads no imaging library

                rgb = ImageColor.getrgb(text)[:3]
        except ValueError:
            raise ValueError(f"unknown colour {text!r}; use a name (white), #rrggbb or r,g,b") from None
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError(f"bad colour {text!r}; use a name (white), #rrggbb or r,g,b with values 0-255")
        return cls(text, rgb)  # type: ignore[arg-type]


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
        return self.flags[0] if self.flags else flag_of(self.key)

    def name(self, where: str) -> str:
        """How the user wrote this option: ``--size`` / ``SRC`` on the command line, ``[shard] size`` in a file."""
        if where == "cli":
            return self.key.upper() if self.argument else self.flag
        return f"[{where}] {self.key}"

    def expects(self) -> str:
        """What the option takes, as an error line says it: ``a whole number at least 1 and at most 4096``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        kind = {bool: "true or false", int: "a whole number", float: "a number", str: "text", PATH_TYPE: "a path",
                LIST: "a list of text values", COLOR: "a colour"}[self.type]
        return kind + (" " + self.bounds() if self.bounds() else "")

    def bounds(self) -> str:
        """The declared range in words (``at least 1 and at most 4096``; empty without one): what ``-h`` and the
        error lines show."""
        bounds = []
        if self.min is not None:
            bounds.append(f"at least {shown_number(self.min)}")
        if self.above is not None:
            bounds.append(f"above {shown_number(self.above)}")
        if self.max is not None:
            bounds.append(f"at most {shown_number(self.max)}")
        if self.below is not None:
            bounds.append(f"below {shown_number(self.below)}")
        return " and ".join(bounds)

    def check(self, value: Any, where: str) -> Any:
        """``value`` converted to the declared type, or a :class:`UserError` naming the option as ``where`` has it
        (``"cli"`` or a pipeline table's name)."""
        if value is None:
            if self.required and where == "cli":
                raise OptionError(f"{self.name(where)} is required")
            return None
        error = OptionError if where == "cli" else UserError  # the command line's usage error (exit 2); a file's: 1
        bad = error(f"{self.name(where)} must be {self.expects()} (got {_shown(value)})")
        texts = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, (str, Path)) and not str(v) for v in texts):  # `--set shard.src=`: not the working folder
            raise error(f"{self.name(where)} is empty; give a value, or leave the option out for its default")
        for v in (texts if self.type in (PATH_TYPE, LIST) or self.output else ()):
            mistake = place_mistake(v, self.output) if isinstance(v, str) else None
            if mistake:
                raise error(f"{self.name(where)} = {_shown(v)}: {mistake}")
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
        elif t == COLOR:
            if not isinstance(value, str):
                raise bad
            try:
                value = Color.parse(value)
            except ValueError as e:
                raise error(f"{self.name(where)}: {e}") from None
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


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def place_mistake(text: str, output: bool = True) -> str | None:
    """Why a path that names a scheme is refused (None: it is a local path or an object store's URL): ``S3://…``
    is the object store only in lower case (else it would become a local folder ``S3:``), and an output is a local
    path or an object store, never ``ftp://…`` or ``https://…``."""
    m = _SCHEME.match(text)
    if m is None or is_url(text):
        return None
    scheme = m.group(1)
    if is_url(scheme.lower() + text[len(scheme):]):
        return f"write the scheme in lower case ({scheme.lower()}://…); {scheme}:// would be a local folder"
    if output:
        return f"{scheme}:// is not a place gandata writes (a local path, or an object store: s3://, gs://…)"
    return None


def shown_number(v: float) -> str:
    """A bound or a default as a reader writes it: ``4096``, ``0.02``, ``1000`` (not ``1000.0``)."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else f"{v:g}"


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


Rule = Callable[[dict[str, Any], Callable[[str], str]], None]  # (values, how an option is named) → ValueError


@dataclass(frozen=True)
class Declaration:
    """A command's options and the rules between them (what no single option can say: smoothing for a critic
    without targets, a row limit that Ray tasks cannot keep). Checked whole by :meth:`check`, the one check that
    the command line, pipeline files and the library's option objects share."""

    command: tuple[str, ...]
    options: tuple[Opt, ...]
    rules: tuple[Rule, ...] = ()

    def option(self, key: str) -> Opt:
        return next(o for o in self.options if o.key == key)

    def defaults(self) -> dict[str, Any]:
        return {o.key: o.default for o in self.options}

    def check(self, given: dict[str, Any], where: str) -> dict[str, Any]:
        """Every option checked and converted, the rest at their defaults, then the rules; one line naming the
        option as ``where`` has it (``"cli"`` or a pipeline table) for the first mistake."""
        checked = values(self.options, given, where)
        self.check_rules(checked, where)
        return checked

    def check_rules(self, checked: dict[str, Any], where: str) -> None:
        by_key = {o.key: o for o in self.options}

        def name(key: str) -> str:
            return by_key[key].name(where) if key in by_key else key

        for rule in self.rules:
            try:
                rule(checked, name)
            except ValueError as e:
                raise (OptionError if where == "cli" else UserError)(str(e)) from None


_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("declared_trusted", default=False)


@contextlib.contextmanager
def checked_already() -> Iterator[None]:
    """Options objects made inside this block take their values as already checked by their declaration (the
    command line and pipeline files check every value before a stage runs): nothing is checked or parsed twice."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


class Declared:
    """A library's options object (a dataclass) whose fields are options of a command: their defaults are the
    declared ones (:func:`declared_defaults`), and a value given to the library is checked and converted by the same
    declaration as on the command line, once, when the object is made. A field the declaration lacks is the
    library's own."""

    ERROR: ClassVar[type[UserError]] = UserError

    def declaration(self) -> Declaration:
        raise NotImplementedError

    def __post_init__(self) -> None:
        if _TRUSTED.get():
            return
        d = self.declaration()
        own = {f.name for f in fields(self)}  # type: ignore[arg-type]
        given = {o.key: getattr(self, o.key) for o in d.options if o.key in own and o.cli and not o.argument
                 and getattr(self, o.key) is not None}
        try:
            checked = d.check(given, "cli")
        except UserError as e:
            raise self.ERROR(str(e)) from None
        for key in given:
            if d.option(key).type is not PATH_TYPE:  # a path stays as given (str or Path); the rest as checked
                setattr(self, key, checked[key])


def check_call(declaration: Declaration, error: type[UserError] = UserError, **given: Any) -> dict[str, Any]:
    """A library function's arguments checked by its command's declaration — the same check as on the command line,
    naming the option as the command line does — and converted (a colour parsed once); values left None and keys the
    declaration lacks pass as given. Inside :func:`checked_already` (a stage run by the command line or a pipeline,
    whose values are checked before it starts) nothing is checked again."""
    if _TRUSTED.get():
        return given
    offered = {o.key for o in declaration.options if o.cli and not o.argument}
    mine = {k: v for k, v in given.items() if k in offered and v is not None}
    try:
        checked = declaration.check(mine, "cli")
    except UserError as e:
        raise error(str(e)) from None
    return {k: checked[k] if k in mine else v for k, v in given.items()}


def declared_defaults(declaration: Declaration, *keys: str) -> dict[str, Any]:
    """The declared defaults of ``keys`` (all options when none are named): what a library's options object
    takes as its own defaults."""
    return {o.key: o.default for o in declaration.options if not keys or o.key in keys}
