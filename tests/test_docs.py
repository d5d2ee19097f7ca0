"""The user-facing text: every link resolves, and nothing reads like a lab diary."""

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
