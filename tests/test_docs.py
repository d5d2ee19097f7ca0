"""The user-facing text: every link and named path resolves, and nothing reads like a lab
diary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
HISTORY = re.compile(r"\b(issue \d+|this stop|previous run|previous rerun|withdrawn|this session|"
                     r"on this machine|measured here|closing note)\b", re.I)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def notebook_text(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.parametrize("page", [*PAGES, *sorted((REPO / "notebooks").glob("*.ipynb"))],
                         ids=lambda p: p.name)
def test_no_development_history_in_user_facing_text(page):
    text = notebook_text(page) if page.suffix == ".ipynb" else page.read_text()
    found = sorted({m.group(0) for m in HISTORY.finditer(text)})
    assert not found, f"{page.name} says {found}: describe what is; history goes in commits"


CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
NAMED_PATH = re.compile(
    r"(?<![\w/.-])((?:configs|docs|bench|tests|fsstools|notebooks)/[\w./{}*-]*\w)")
"""A path into the repository as prose names it (``configs/pascal/foldN.yaml``)."""
TEMPLATE = re.compile(r"\{fold\}|\{0\.\.3\}|(?<=fold)N\b")
"""Fold placeholders in a named path, each read as fold 0 (``NN_`` stands for a notebook)."""
BASE_KEY = re.compile(r"^base: (\S+)$", re.M)


@pytest.mark.parametrize("page", [*PAGES, *CONFIGS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_a_page_or_config_names_exists(page):
    text = page.read_text()
    assert not re.search(r"\bSPEC\b", text), \
        f"{page.relative_to(REPO)} cites a SPEC; the project has none: cite the page that holds it"
    for named in NAMED_PATH.findall(text):
        path = TEMPLATE.sub("0", named).replace("NN_", "[0-9][0-9]_")
        hits = list(REPO.glob(path)) if "*" in path or "[" in path else [REPO / path]
        assert hits and all(h.exists() for h in hits), \
            f"{page.relative_to(REPO)} names {named}, which does not exist"
    if page.suffix == ".yaml":
        for base in BASE_KEY.findall(text):
            assert (page.parent / base).is_file(), \
                f"{page.relative_to(REPO)}: base {base} does not exist"


def test_the_readme_stays_short():
    shown = [x for x in (REPO / "README.md").read_text().splitlines() if not x.startswith("<!--")]
    assert len(shown) <= 190, f"the README shows {len(shown)} lines: move detail to docs/"


def test_the_command_list_of_docs_cli_matches_the_command_table():
    from fsstools.cli import COMMANDS

    block = (REPO / "docs" / "cli.md").read_text().split("```")[1]
    listed = re.findall(r"^fsstools (?!--)([\w-]+)", block, re.M)
    assert set(listed) == set(COMMANDS), (
        f"docs/cli.md lists {sorted(set(listed) - set(COMMANDS))} that are not commands and "
        f"misses {sorted(set(COMMANDS) - set(listed))}")
    assert list(dict.fromkeys(listed)) == list(COMMANDS), "list them in the table's order"
