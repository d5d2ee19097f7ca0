"""Every fenced code block of README.md, CONTRIBUTING.md and docs/*.md runs as written, or as the treatment
named just before it says (an HTML comment, invisible on the page)::

    <!-- doc-test: TREATMENT, why -->

Treatments (:data:`TREATMENTS`):

- ``run``: run as written from the repository root.
- ``tiny``: run as written, notebooks on the tiny profile (``FSSTOOLS_PROFILE=tiny``, which
  every notebook honours when its caller injects no profile).
- ``after-demo``: run as written from the repository root after the demo (the command of
  ``make demo``, run as make would run it, on the quick profile).
- ``demo-examples``: the same, from the folder of example files the demo writes.
- ``tiny-model``: Python run in a scratch folder where ``best.pt`` is the tiny profile's base
  model and ``data/synth/A`` its data (for blocks that name a trained model and the full set).
- ``features``: Python run with the tensors it names made up at their documented shapes.
- ``methods-yaml``: a methods list of an eval config; every entry resolves to a method.
- ``parse-only``: too long, or needs data or hardware CI lacks: the block is valid bash,
  every ``fsstools`` command and bench script parses its options (the parser runs, nothing
  after it), every ``make`` target expands (``make -n``) and the fsstools commands of its
  recipe parse; other programs (tar, curl, pip ...) are only syntax-checked.
- ``synopsis``: ``parse-only`` on a usage synopsis: ``[optional]`` parts are included, the
  first of ``a|b`` alternatives is taken and ``...`` is dropped.
- ``text``: not code (a citation, a folder layout).

``.venv/bin/`` in a block, and the programs ``fsstools``, ``python``, ``papermill`` and
``torchrun``, mean this test's Python with this checkout on its path.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```(\S*)\s*$")
MARK = re.compile(r"^\s*<!-- doc-test: ([\w-]+)(?:,\s*(.*?))?\s*-->\s*$")
TREATMENTS = ("run", "tiny", "after-demo", "demo-examples", "tiny-model", "features",
              "methods-yaml", "parse-only", "synopsis", "text")
EXTERNAL = ("mkdir", "tar", "unzip", "curl", "pip", "cd", "for", "done")
"""Programs a parse-only block may call that are only syntax-checked."""
SLOW_S = 1800


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, from 1
    lang: str
    text: str
    treatment: str | None
    why: str

    @property
    def name(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` with the treatment marked before each."""
    lines, found, i = page.read_text().splitlines(), [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = len(opening.group(1)), opening.group(2)
        before = next((x for x in reversed(lines[:i]) if x.strip()), "")
        mark = MARK.match(before)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = "\n".join(x[indent:] for x in lines[i + 1:end]) + "\n"
        found.append(Block(page, i + 1, lang, body, mark and mark.group(1),
                           (mark and mark.group(2)) or ""))
        i = end + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]
CODE = [b for b in ALL if b.treatment != "text"]


def test_every_block_has_a_known_treatment():
    unmarked = [f"{b.name} ({b.treatment or 'no mark'})" for b in ALL
                if b.treatment not in TREATMENTS]
    assert ALL and not unmarked, (
        f"code blocks without a known treatment: {unmarked}; put '<!-- doc-test: T, why -->' "
        f"just before each, T one of {', '.join(TREATMENTS)} (see {Path(__file__).name})")


# ----------------------------------------------------------------------------- running


@pytest.fixture(scope="module")
def shims(tmp_path_factory) -> Path:
    """A bin folder whose programs run this Python with this checkout first on its path."""
    folder = tmp_path_factory.mktemp("doc-bin")
    programs = {"python": "", "python3": "", "fsstools": "-m fsstools.cli",
                "papermill": "-m papermill", "jupyter": "-m jupyter",
                "torchrun": "-m torch.distributed.run"}
    for name, args in programs.items():
        path = folder / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" {args} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


def environment(shims: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PATH"] = f"{shims}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
    return env


def local(text: str, shims: Path) -> str:
    """``text`` with ``.venv/bin/`` meaning the shims."""
    return re.sub(r"(?<![\w/])\.venv/bin/", f"{shims}/", text)


def run(command: list[str] | str, shims: Path, cwd: Path = REPO, **env: str
        ) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=environment(shims, **env), text=True,
                          capture_output=True, shell=isinstance(command, str),
                          executable="/bin/bash" if isinstance(command, str) else None,
                          timeout=SLOW_S)
    assert done.returncode == 0, (f"{command!r} in {cwd} exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def run_block(block: Block, shims: Path, cwd: Path = REPO, **env: str
              ) -> subprocess.CompletedProcess:
    if block.lang == "python":
        return run([sys.executable, "-c", block.text], shims, cwd, **env)
    assert block.lang == "bash", f"{block.name}: cannot run a {block.lang or 'plain'} block"
    return run("set -euo pipefail\n" + local(block.text, shims), shims, cwd, **env)


# ----------------------------------------------------------------------------- parse-only


def command_lines(text: str) -> list[list[str]]:
    """The simple commands of a bash block: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def synopsis(line: str) -> str:
    """A usage line as a command: ``[optional]`` parts kept, ``a|b`` -> ``a``, ``...`` gone."""
    out, depth = [], 0
    for i, ch in enumerate(line):
        opens = ch == "[" and line[i + 1:i + 3] == "--" and line[i - 1:i] == " "
        if opens or (ch == "]" and depth and not _inside_value(line, i)):
            depth += 1 if opens else -1
            continue
        out.append(ch)
    text = re.sub(r"(?<=\s)([\w.-]+)(?:\|[\w.-]+)+", r"\1", "".join(out))
    text = re.sub(r"\s--[\w-]+\s\.\.\.(?=\s|$)", "", text)  # [--support ...]: one more
    return re.sub(r"\s\.\.\.(?=\s|$)", "", text)


def _inside_value(line: str, i: int) -> bool:
    """Whether the "]" at ``i`` closes a bracket opened inside an option's value."""
    opened = line.rfind("[", 0, i)
    return opened > 0 and line[opened - 1] in "=[,"


class Parsed(Exception):
    """Raised by argparse, patched, once a command's options have parsed."""


@pytest.fixture
def parse_only(monkeypatch):
    """argparse parses, then stops the program (a bad option still exits 2)."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed(self.prog)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)


def parse_command(words: list[str], shims: Path) -> None:
    """One command of a parse-only block: its options parse (see the module docstring), in
    this process (argparse patched by :func:`parse_only`)."""
    program = words[0].removeprefix(".venv/bin/")
    if program == "make":
        dry = run(["make", "-n", *words[1:]], shims)
        recipe = [w for line in command_lines(dry.stdout)
                  for w in [[x.removeprefix(".venv/bin/") for x in line]] if w[0] == "fsstools"]
        for line in recipe:
            parse_command(line, shims)
        return
    if program == "torchrun":
        words = ["fsstools", *words[words.index("fsstools.cli") + 1:]]
        program = "fsstools"
    if program.startswith("bench/") and not program.endswith(".py"):
        run(["bash", "-n", program], shims)
        return
    if program not in ("python", "python3", "fsstools"):
        assert program in EXTERNAL, (f"{shlex.join(words)}: {program} is neither ours nor a "
                                     "known external program; mark the block otherwise")
        return
    if words[1:] == ["--version"]:
        from fsstools.cli import main

        assert main(words[1:]) == 0
        return
    with pytest.raises(Parsed):
        if program == "fsstools":
            from fsstools.cli import main

            code = main(words[1:])
            pytest.fail(f"{shlex.join(words)} exited {code} before its options parsed")
        assert words[1].startswith("bench/"), f"{words}: only bench scripts are parsed"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", words[1:])
            patch.syspath_prepend(str(REPO / "bench"))
            runpy.run_path(str(REPO / words[1]), run_name="__main__")


# ----------------------------------------------------------------------------- the demo


@pytest.fixture(scope="module")
def demo(shims) -> Path:
    """Run what ``make demo`` runs (its recipe, from ``make -n``; the quick profile) and
    return its output folder."""
    from fsstools import paths

    recipe = [line for line in run(["make", "-n", "demo"], shims).stdout.splitlines()
              if "fsstools demo" in line]
    assert len(recipe) == 1, f"make -n demo runs no single fsstools demo: {recipe}"
    done = run(local(recipe[0], shims), shims)
    out = paths.outputs_dir() / "demo"
    for name in ("scores.csv", "scores.png", "episode.png", "your_images/best.pt"):
        assert (out / name).is_file() and str(out / name.split("/")[0]) in done.stdout, (
            f"the demo did not write or print {out / name}")
    assert "RePRI" in done.stdout and "[" in done.stdout, "the demo printed no interval table"
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A scratch folder holding ``best.pt`` (the tiny profile's base model) and
    ``data/synth/A`` (the tiny set)."""
    from fsstools.studies import recipes

    prof = recipes.get_profile("tiny")
    folder = tmp_path_factory.mktemp("tiny-model")
    (folder / "best.pt").symlink_to(recipes.ensure_base_model(prof, 0))
    (folder / "data" / "synth").mkdir(parents=True)
    (folder / "data" / "synth" / "A").symlink_to(prof.style_root("A"))
    return folder


FEATURES = """\
import torch
B, S, C, h, w, H, W = 2, 1, 16, 9, 9, 72, 72
support_feats = torch.randn(B, S, C, h, w)
support_masks = torch.zeros(B, S, h, w, dtype=torch.long)
support_masks[..., 2:6, 2:6] = 1
query_feats = torch.randn(B, C, h, w)
query_valid = torch.ones(B, h, w, dtype=torch.bool)
"""


# ----------------------------------------------------------------------------- the blocks


@pytest.mark.slow
@pytest.mark.parametrize("block", CODE, ids=lambda b: f"{b.name}-{b.treatment}")
def test_block_runs_as_its_treatment_says(block, shims, request):
    kind = block.treatment
    if kind in ("parse-only", "synopsis"):
        request.getfixturevalue("parse_only")
        assert block.lang in ("bash", ""), f"{block.name}: parse-only is for shell blocks"
        run(["bash", "-n", "-c", block.text], shims)
        lines = block.text.splitlines()
        text = "\n".join(synopsis(x) for x in lines) if kind == "synopsis" else block.text
        for words in command_lines(text):
            parse_command(words, shims)
    elif kind == "methods-yaml":
        from fsstools.inference import resolve_methods

        methods = resolve_methods(yaml.safe_load(block.text)["methods"])
        assert len(methods) == len(yaml.safe_load(block.text)["methods"])
    elif kind == "features":
        names: dict = {}
        exec(FEATURES + block.text, names)  # noqa: S102 (the documented snippet)
        assert tuple(names["mask"].shape) == (2, 72, 72)
    elif kind == "tiny-model":
        run_block(block, shims, request.getfixturevalue("tiny_model"))
    elif kind == "after-demo":
        request.getfixturevalue("demo")
        run_block(block, shims)
    elif kind == "demo-examples":
        run_block(block, shims, request.getfixturevalue("demo") / "your_images")
    elif kind == "tiny":
        run_block(block, shims, FSSTOOLS_PROFILE="tiny")
    else:
        assert kind == "run", f"{block.name}: treatment {kind} has no runner here"
        run_block(block, shims)


def test_synopsis_keeps_options_and_values():
    line = "fsstools x --a 1 [--b [1,2]] [--c u|v] --d 'k=[[1],[5]]' [--e ...] ..."
    assert shlex.split(synopsis(line)) == ["fsstools", "x", "--a", "1", "--b", "[1,2]",
                                           "--c", "u", "--d", "k=[[1],[5]]"]


@pytest.mark.parametrize("target", ["demo", "reproduce"])
def test_make_passes_args_to_the_command(target):
    dry = subprocess.run(["make", "-n", target, "ARGS=--only 02 03"], cwd=REPO, text=True,
                         capture_output=True, check=True).stdout
    assert f"fsstools {target} --only 02 03" in dry, dry
