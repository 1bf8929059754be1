"""The ``gandata`` command line, built from the stage table (:mod:`gandata.stages`) and its declarations
(:mod:`gandata.declarations`): every command's options, help, choices and checks come from there; a command checks
its values, runs its stage, and prints the stage's summary (``--json``: as one JSON object). Nothing else lives
here.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .engine import command as ray_command  # stdout kept clean, signals end it promptly
from .engine import stdout  # the real stdout: under Ray, descriptor 1 goes to stderr
from .errors import OptionError, UserError
from .fileio import json_bytes
from .options import COLOR, LIST, PATH_TYPE, Opt, shown_number
from .stages import STAGES, Context, Stage
from .summary import Summary
from .terminal import shown

HELP_NAMES = {"help_option_names": ["-h", "--help"]}
ORDER = ("fetch", "crop", "dedupe", "shard", "inspect", "train", "sample", "eval", "export", "run", "demo")


class _Root(TyperGroup):
    """The top command: its commands listed in the order the data flows through them."""

    def list_commands(self, ctx):  # noqa: ANN001, ANN201 (click's signature)
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))

    def resolve_command(self, ctx, args):  # noqa: ANN001, ANN201
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            raise OptionError(_unknown("command", args[0], self.list_commands(ctx)))  # a malformed command line
        return super().resolve_command(ctx, args)


def _unknown(what: str, given: str, known: list[str]) -> str:
    """One line for a mistyped name: the closest known ones first, then all of them."""
    import difflib

    close = difflib.get_close_matches(given, known, n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown {what} {given!r}{hint} (use one of {', '.join(known)})"


app = typer.Typer(
    name="gandata",
    cls=_Root,
    context_settings=HELP_NAMES,
    help="Build clean GAN training sets of cartoon faces and train GANs on them: fetch images (Bitmoji, BrickLink, "
         "Rebrickable, URL lists), crop faces, find duplicates, write WebDataset shards, inspect them, train "
         "(dcgan, lsgan, wgan, wgan-gp, cdcgan), sample and evaluate; run whole pipeline files; or see it all "
         "offline with demo.",
    epilog="\b\nExamples:\n  gandata demo                         # the whole chain offline, on a local server\n"
           "  gandata shard ~/anime-faces --name anime\n  gandata inspect data/anime/shards --grid anime.png\n"
           "  gandata train wgan-gp --shards data/anime/shards",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
GROUP_BRIEF = {"fetch": "Download images into a dataset folder (resumable)",
               "crop": "Cut square face crops out of images",
               "train": "Train a GAN on shards (dcgan, lsgan, wgan, wgan-gp, cdcgan)"}
GROUPS = {
    "fetch": ("Download images into a dataset folder (resumable: run the same command again to continue).",
              "\b\nExamples:\n  gandata fetch bitmoji --count 200000\n  gandata fetch bricklink --catalog-file "
              "Minifigures.txt\n  gandata fetch urls anime.txt --name anime"),
    "crop": ("Cut square face crops out of images into a dataset folder.",
             "\b\nExamples:\n  gandata crop anime-faces --src ~/illustrations\n  gandata crop lego-faces"),
    "train": ("Train a GAN on shards, streaming them; checkpoints, sample grids and metrics go to the run folder. "
              "gandata train KIND --help shows that trainer's defaults.",
              "\b\nExamples:\n  gandata train wgan-gp --shards data/bitmoji/shards\n  gandata train cdcgan "
              "--shards data/bricklink/shards --gpus 4 --kimg 2000"),
}


def _err(msg: str) -> None:
    """One line on stderr; what came from data in it (a file's name, a label) shown, never acted on
    (:func:`gandata.terminal.shown`)."""
    print(shown(msg), file=sys.stderr)


def _show_version(value: bool) -> None:
    if value:
        print(f"gandata {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", "-V", callback=_show_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    pass


# ------------------------------------------------------------------------------- commands from declarations


def _annotation(o: Opt) -> Any:
    if o.type is bool:
        base: Any = bool
    elif o.choices:
        base = str  # checked by Opt.check (one line, exit 1, like every other bad value); shown in the metavar
    elif o.type == LIST:
        base = list[str]
    elif o.type is PATH_TYPE:
        base = str  # Opt.check makes it a Path — or keeps an object-store URL (s3://…) whole; click's Path would not
    elif o.type == COLOR:
        base = str  # Opt.check parses it (once) into a Color
    else:
        base = o.type
    if not o.required and o.default is None:
        base = Optional[base]  # noqa: UP045 (typer reads the annotation at run time)
    if o.argument:
        info = typer.Argument(help=o.help, metavar=o.key.upper() + ("..." if o.type == LIST else ""),
                              show_default=False)
    else:
        names = () if o.type is bool and not o.flags else (o.flags or (o.flag,))
        metavar = "[" + "|".join(o.choices) + "]" if o.choices else o.metavar or METAVARS.get(o.type)
        info = typer.Option(*names, help=_help(o), envvar=o.envvar, show_default=False, metavar=metavar)
    return Annotated[base, info]


def _help(o: Opt) -> str:
    """An option's help line with its default and range from the declaration: ``… [default: 64; at least 1 and at
    most 4096]`` (the range in the words its error line uses)."""
    extra = []
    if o.type is bool:
        extra.append(f"default: {'' if o.default else 'no-'}{o.flag[2:]}")
    elif o.default is not None:
        default = o.default
        extra.append(f"default: {shown_number(default) if isinstance(default, float) else default}")
    if o.bounds():
        extra.append(o.bounds())
    return f"{o.help}  [{'; '.join(extra)}]" if extra else o.help


# what a reader of --help reads
METAVARS = {int: "N", float: "NUMBER", str: "TEXT", PATH_TYPE: "PATH", LIST: "PATH", COLOR: "COLOUR"}

DATA_DIR = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    "--data-dir", envvar="GANDATA_DATA", help="Workspace holding DATA/<dataset>/<stage> (default ./data).")]
AS_JSON = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")]


def finish(result: Summary, as_json: bool) -> None:
    """Print a stage's summary (only rank 0 of a torchrun job prints), then end with its failure, if any."""
    if int(os.environ.get("RANK", 0)) != 0:
        return

    # JSON keeps every name exact (a file name's undecodable bytes as their escapes \udcXX); a line shows it
    text = (json_bytes(result.to_json(), default=str).decode() if as_json
            else "\n".join(shown(line) for line in result.lines()))
    print(text, file=stdout(), flush=True)
    failure = result.failure()
    if failure:
        code, reason = failure
        _err(f"gandata: {reason}" if code == 130 else f"gandata: error: {reason}")  # 130: interrupted, not an error
        raise _Said(code)


class _Said(typer.Exit):
    """An exit whose line :func:`finish` has printed already."""


def _command(stage: Stage):
    declared = [o for o in stage.options if o.cli]
    params = [inspect.Parameter(o.key, inspect.Parameter.KEYWORD_ONLY, annotation=_annotation(o),
                                default=inspect.Parameter.empty if o.required else o.default) for o in declared]
    if stage.data_dir_flag:
        params.append(inspect.Parameter("data_dir", inspect.Parameter.KEYWORD_ONLY, annotation=DATA_DIR, default=None))
    params.append(inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=AS_JSON, default=False))

    def command(**given: Any) -> None:
        as_json = given.pop("as_json", False)
        data_dir = given.pop("data_dir", None)
        checked = stage.declaration.check(given, "cli")
        ctx = Context(data_dir=data_dir or Path("data"), progress=not as_json, allow_commands=True)  # the user typed it
        with ray_command(INTERRUPTED) if checked.get("engine") == "ray" else contextlib.nullcontext():
            result = stage.run(checked, ctx)
        finish(result, as_json)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = stage.help
    command.__name__ = stage.command[-1].replace("-", "_")
    return command


class _Group(TyperGroup):
    """A command group whose unknown subcommand is a one-line error naming the known ones."""

    def resolve_command(self, ctx, args):  # noqa: ANN001, ANN201 (click's signature)
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            what = {"train": "trainer", "fetch": "source", "crop": "kind of crop"}.get(self.name or "", "command")
            raise OptionError(_unknown(what, args[0], list(self.commands)))
        return super().resolve_command(ctx, args)


def _register() -> None:
    groups: dict[str, typer.Typer] = {}
    for group, (text, epilog) in GROUPS.items():
        groups[group] = typer.Typer(help=text, epilog=epilog, no_args_is_help=True, rich_markup_mode=None, cls=_Group,
                                    context_settings=HELP_NAMES)
        app.add_typer(groups[group], name=group, short_help=GROUP_BRIEF[group])
    for stage in STAGES:
        target = groups[stage.command[0]] if len(stage.command) == 2 else app
        target.command(stage.command[-1], help=stage.help, short_help=stage.short, epilog=stage.epilog,
                       context_settings=HELP_NAMES)(_command(stage))


_register()


# ------------------------------------------------------------------------------------------ run and demo


@app.command(
    "run",
    short_help="Run the stages of a pipeline file in order",
    context_settings=HELP_NAMES,
    epilog="\b\nExamples:\n"
    "  gandata run pipelines/bitmoji-64.toml                       # fetch → shard → train, resumable\n"
    "  gandata run pipelines/anime-faces-96.toml --set crop.src=~/illustrations\n"
    "  gandata run pipelines/lego-faces-64.toml --only fetch --only crop\n"
    "\b\nThe pipelines shipped with gandata can be named without a path: gandata run bitmoji-64.\n"
    "Every stage's keys and values are checked before the first stage runs. Run it again after a crash to\n"
    "continue; a finished pipeline re-runs as a quick no-op.",
)
def run_cmd(
    pipeline_file: Annotated[str, typer.Argument(help="A pipeline TOML file ([pipeline] and [fetch] [crop] [shard] "
                                                      "[train] [eval] tables), or a shipped pipeline's name.")],
    set_: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--set", help="Override STAGE.KEY=VALUE (repeatable), e.g. fetch.count=500.")] = None,
    only: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        help="Run only this stage (repeatable); the others' outputs are still used.")] = None,
    data_dir: DATA_DIR = None,
    as_json: AS_JSON = False,
) -> None:
    """Run the stages of a pipeline file in order (every stage resumable); a summary line per stage."""
    from .pipeline import load as load_pipeline
    from .pipeline import plan
    from .pipeline import run as run_pipeline

    spec = load_pipeline(pipeline_file, set_)
    steps = plan(spec, spec["pipeline"].get("source_file", "pipeline"), data_dir or "data")[1]
    with ray_command(INTERRUPTED) if any(step.values.get("engine") == "ray" for step in steps) \
            else contextlib.nullcontext():
        r = run_pipeline(spec, data_dir=data_dir or Path("data"), only=only, progress=not as_json,
                         echo=None if as_json else _err, hints="set")
    finish(r, as_json)


# how long the demo takes, as README.md says it (tests/test_docs.py holds the two alike): measured with `time gandata
# demo` on 2 cores from idle (62 s) to a shared machine at load 8 with one more core kept busy (17 min)
DEMO_TIME = "1–20 min on 2 CPU cores, by how busy they are"


@app.command(
    "demo",
    short_help="The whole chain offline, on a local render server",
    context_settings=HELP_NAMES,
    epilog="\b\nExamples:\n"
    f"  gandata demo                        # {DEMO_TIME} → ./gandata-demo\n"
    "  gandata demo --out /tmp/demo --small  # tens of images, a few training steps: under a minute",
)
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("gandata-demo"),
    small: Annotated[bool, typer.Option(help="A reduced run (tens of images, a few training steps; for CI).")] = False,
    as_json: AS_JSON = False,
) -> None:
    """The whole chain offline: a local render server, fetch, crop, dedupe, shard, train, samples, contact sheets."""
    from .demo import demo

    finish(demo(out, size="small" if small else "full", progress=not as_json,
                echo=_err if not as_json else (lambda m: None)), as_json)


_COMMAND = None


def _click_command():
    """The click command typer builds from the app (built once: the build is most of a short command's time)."""
    global _COMMAND
    if _COMMAND is None:
        _COMMAND = typer.main.get_command(app)
        _plain_arguments(_COMMAND)
    return _COMMAND


def _plain_arguments(command) -> None:  # noqa: ANN001 (click's types)
    """An argument's help line names it (``SRC...``) without typer's Python type (``<list[str]>``): the help's
    text says what it takes."""
    for param in getattr(command, "params", []):
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None
    for sub in getattr(command, "commands", {}).values():
        _plain_arguments(sub)


def _too_long(path: str | bytes) -> str:
    """Which limit a path broke: one of its names is over the file system's limit of a name (255 bytes), or the whole
    path is over the system's limit of a path (PATH_MAX, 4096 bytes)."""
    raw = os.fsencode(path)
    name = max(raw.split(b"/"), key=len)
    if len(name) > 255:
        return (f"a name in this path is {len(name)} bytes, over the file system's limit of 255 bytes a name; "
                "give a shorter name")
    return (f"this path is {len(raw)} bytes, over the system's limit of {os.pathconf('/', 'PC_PATH_MAX')} bytes a "
            "path (PATH_MAX); give a shorter path")


PATH_ERRORS = {  # a path the user gave (or one made from it) that the system refused: what it means, what to do
    errno.ENOENT: "no such file or folder (check the path; an output's folder is made only where a command says so)",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "this is a folder; give a file name",
    errno.EEXIST: "something is already there",
    errno.ENAMETOOLONG: _too_long,  # which limit: a name's or the whole path's
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ELOOP: "too many symbolic links (a link loop?)",
    errno.ENXIO: "not a regular file (a socket or a device)",
}


INTERRUPTED = "gandata: interrupted; run the same command again to continue where it stopped"


def main() -> None:
    """Console entry point: a user's mistake ends in one line on stderr and exit status 1 (a malformed command
    line: 2), never a traceback."""
    try:
        from typer._click import exceptions as cx  # the click that typer runs on (vendored in recent typer)
    except ImportError:
        from click import exceptions as cx

    from .workers import steady_heap

    steady_heap()  # long runs keep flat memory (docs/memory.md)
    try:
        code = _click_command().main(args=sys.argv[1:], prog_name="gandata", standalone_mode=False)
    except _Said as e:
        sys.exit(e.exit_code)
    except cx.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:  # `gandata fetch`: its help
            print(e.ctx.get_help())
            return
        where = f"; see {e.ctx.command_path} --help" if e.ctx else ""
        _err(f"gandata: error: {' '.join(e.format_message().split()).rstrip('.')}{where}")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        _err(INTERRUPTED)
        sys.exit(130)
    except UserError as e:
        _err(f"gandata: error: {e}")
        sys.exit(2 if isinstance(e, OptionError) else 1)
    except BrokenPipeError:
        os._exit(0)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" at {e.filename}" if e.filename else ""
            _err(f"gandata: error: disk full{where}; free some space and run the same command again (what was "
                 "written is kept)")
            sys.exit(1)
        if e.filename is None or e.errno not in PATH_ERRORS:
            raise
        what = PATH_ERRORS[e.errno]
        _err(f"gandata: error: {e.filename}: {what(e.filename) if callable(what) else what}")
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C (and SIGTERM under Ray) into a silent exit 130
        _err(INTERRUPTED)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank of the user's own torchrun: its work is done and closed
        from .trainers.train import leave_now

        leave_now(code if isinstance(code, int) else 0)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
