"""The documentation shows only what exists: every ``gandata …`` command line in README.md and docs/*.md names a real
command, and every option it passes is one that command declares (the declarations build the command line, so this
is checked against them, not against a copy)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gandata import stages

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EVERYWHERE = {"--json", "--help", "-h"}  # every command takes these
OWN = {  # the commands not declared in stages.py (cli.py's own)
    ("run",): {"--set", "--only", "--data-dir"},
    ("demo",): {"--out", "--small", "--no-small"},
    (): {"--version", "-V", "--install-completion", "--show-completion"},
}


def flags_of(command: tuple[str, ...]) -> set[str] | None:
    """What ``gandata COMMAND`` takes, or None when there is no such command."""
    if command in OWN:
        return OWN[command] | EVERYWHERE
    for s in stages.STAGES:
        if s.command == command:
            out = set(EVERYWHERE) | ({"--data-dir"} if s.data_dir_flag else set())
            for o in s.options:
                if not o.cli or o.argument:
                    continue
                out.update(o.flags or (o.flag,))
                if o.type is bool:
                    out.add("--no-" + o.flag[2:])
            return out
    return None


GROUPS = {s.command[0] for s in stages.STAGES if len(s.command) == 2}


def command_lines() -> list[tuple[str, str]]:
    """(where, the text after ``gandata``) for every command line in a code block or an inline code span."""
    found = []
    for page in PAGES:
        text = page.read_text()
        spans = re.findall(r"```[a-z]*\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text)
        for span in spans:
            for line in span.replace("\\|", " ").splitlines():  # a table's escaped "a\|b": both words
                for m in re.finditer(r"(?:^|[\s;&|(])gandata((?: [^#|;&)]*)?)", line):
                    found.append((f"{page.name}: {line.strip()[:100]}", m.group(1).strip()))
    return found


CASES = command_lines()


def test_the_docs_show_command_lines():
    assert len(CASES) > 80  # the pages are read (a broken pattern would find none and pass)


@pytest.mark.parametrize("where, line", CASES, ids=[w for w, _ in CASES])
def test_every_command_and_option_in_the_docs_exists(where, line):
    try:
        words = shlex.split(line.replace("…", ""))
    except ValueError:  # an unclosed quote in a shortened example: its words as they are
        words = line.replace("…", "").split()
    if not words or words[0].startswith(("-", "<")) and words[0] not in ("-h", "-V", "--version", "--help"):
        return  # prose: "gandata's", "gandata <command>"
    if words[0] in ("-h", "-V", "--version", "--help"):
        command: tuple[str, ...] = ()
    elif words[0] in GROUPS and len(words) > 1 and not words[1].startswith("-"):
        command = (words[0], words[1])
    elif words[0] in GROUPS or words[0] in {"run", "demo"} or any(s.command == (words[0],) for s in stages.STAGES):
        command = (words[0],)
    else:
        if re.fullmatch(r"[a-z][a-z-]*", words[0]) and words[0] not in ("is", "does", "and", "of", "writes", "reads"):
            pytest.fail(f"{where}: no command {words[0]!r}")
        return
    if len(command) == 1 and command[0] in GROUPS:
        if len(words) > 1 and words[1].startswith("-") and words[1] not in EVERYWHERE:
            pytest.fail(f"{where}: gandata {command[0]} needs a {command[0]} kind before its options")
        return
    if command and command[-1] in ("KIND", "SOURCE"):
        return
    flags = flags_of(command)
    if flags is None:
        if command[-1].isupper() or command[-1].startswith("<"):
            return  # gandata train KIND: a placeholder
        pytest.fail(f"{where}: no command 'gandata {' '.join(command)}'")
    for w in words[len(command):]:
        if w.startswith("-") and len(w) > 1 and not re.fullmatch(r"-\d.*", w):
            flag = w.split("=", 1)[0]
            assert flag in flags, f"{where}: gandata {' '.join(command)} has no {flag}"


def _output_flags(command: tuple[str, ...]) -> set[str]:
    if command == ("demo",):
        return {"--out", "--data-dir"}
    if command == ("run",):
        return {"--data-dir"}
    for s in stages.STAGES:
        if s.command == command:
            outputs = [o for o in s.options if o.output and not o.argument]
            return {"--data-dir"} | {f for o in outputs for f in (o.flags or (o.flag,))}
    return set()


def test_what_the_documented_commands_write_into_the_working_directory_is_ignored():
    """Run from a checkout, as the README starts, a documented command must not leave files that `git status` shows
    (and a later `git add -A` takes in): its outputs' relative paths, and the defaults of the outputs it leaves out,
    are all in .gitignore."""
    import subprocess

    written = {"data/bitmoji/raw", "data/anime/shards", "gandata-demo/avatars-samples.png", "runs/wgan-gp",
               "runs/lego-faces-64"}  # the default workspace, the demo's folder, train's and a pipeline's runs
    written |= {str(o.default) for d in stages.STAGES for o in d.options if o.output and o.default is not None}
    for _, line in CASES:
        words = line.replace("…", "").split()
        if not words:
            continue
        command = tuple(words[:2]) if words[0] in GROUPS and len(words) > 1 else tuple(words[:1])
        flags = _output_flags(command)
        for flag, value in zip(words, words[1:]):
            value = value.strip("'\"")
            if flag in flags and not re.search(r"^[/~$<]|://|[A-Z]{2,}|[{<]", value):
                written.add(value)
    assert {"anime-64.zip", "grid.png", "dups.jsonl", "samples.png"} <= written  # the pages were read
    asked = sorted(written) + [f"{w}/x" for w in sorted(written)]  # a file, or a folder's content
    out = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(asked) + "\n",
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode not in (0, 1):
        pytest.skip(f"not a git checkout ({out.stderr.strip()})")
    ignored = set(out.stdout.split())
    missed = sorted(w for w in written if w not in ignored and f"{w}/x" not in ignored)
    assert not missed, f"add to .gitignore what documented commands write into the checkout: {missed}"


def test_the_suite_cleans_up_its_temporary_folder(pytestconfig):
    """docs/development.md: a run leaves nothing behind in the temporary folder but what its failed tests wrote —
    pytest keeps no passing test's folder, torch's compile cache lives in a folder of the run, and the precompiled
    header inductor writes beside its default cache is removed at the end when the run made it."""
    import os
    import tempfile

    assert pytestconfig.getini("tmp_path_retention_policy") == "failed"
    cache = pytestconfig._compile_cache
    assert cache.is_dir() and cache.parent == Path(tempfile.gettempdir())
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert Path(os.environ[name]).parent == cache  # inherited by every command the tests start
    # the precompiled header inductor writes where its cache variables do not reach: the one the run removes
    from conftest import _precompiled_headers
    from torch._inductor.codecache import _HEADER_DIR

    assert Path(_HEADER_DIR) == _precompiled_headers()


def test_the_readme_and_demo_help_give_the_demo_the_same_time():
    """A new user reads the time in the README and in `gandata demo -h`: one range, said the same in both."""
    from gandata.cli import DEMO_TIME, app

    readme = " ".join((REPO / "README.md").read_text().split())
    assert re.search(r"\d+–\d+ min", DEMO_TIME) and DEMO_TIME in readme
    demo = next(c for c in app.registered_commands if c.name == "demo")
    assert DEMO_TIME in demo.epilog
    assert "a few minutes" not in readme and "about a minute" not in readme
