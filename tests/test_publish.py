"""Result pages generated from a main job's outputs (fsstools report), and the README's
headline table, which must equal the generated one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fsstools import cli
from fsstools.jobs import publish

REPO = Path(__file__).resolve().parent.parent


def fake_outputs(root: Path) -> Path:
    """A main job's folder: 03's fold means and two notebooks' fragments and figures."""
    out = root / "outputs"
    for stem, title in (("02_loss_ablations", "02 Loss ablations"),
                        ("03_shot_scaling", "03 Shot scaling")):
        (out / stem).mkdir(parents=True)
        (out / stem / "summary.md").write_text(f"## {title}\n\n- a reading\n")
        (out / stem / "curves.png").write_bytes(b"\x89PNG fake")
    rows = [{"method": m, "shots": k, "miou": v, "miou_low": v - 0.01, "miou_high": v + 0.02,
             "n_folds": 4, "n_base_seeds": 3, "interval": "base seeds x episodes"}
            for m, vals in {"panet": (0.5, 0.6), "repri": (0.67, 0.743)}.items()
            for k, v in zip((1, 5), vals, strict=True)]
    pd.DataFrame(rows).to_csv(out / "03_shot_scaling" / "summary.csv", index=False)
    (out / publish.RUN_RECORD).write_text(json.dumps({
        "commit": "abc1234", "uncommitted_changes": False, "cpu": "Some CPU", "cores": 2,
        "cpu_training_precision": "bf16 (x)", "torch": "2.14.1", "started": "2026-12-04 06:00",
        "notebook_seconds": {"02_loss_ablations": 600, "03_shot_scaling": 300},
        "total_seconds": 900}))
    return out


def test_report_writes_results_and_the_readme_headline(tmp_path, capsys):
    out = fake_outputs(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{publish.BEGIN}\nold table\n{publish.END}\n\nmore\n")
    docs = tmp_path / "docs"
    assert cli.main(["report", "--outputs", str(out), "--docs", str(docs),
                     "--readme", str(readme)]) == 0
    page = (docs / "results.md").read_text()
    table = publish.headline_block(page)
    assert publish.headline_block(readme.read_text()) == table
    assert "| RePRI (paper text) | `repri` | 67.0 [66.0, 69.0] | 74.3 [73.3, 76.3] |" in table
    assert "95% interval over base seeds x episodes (3 base models per fold)" in table
    assert readme.read_text().endswith("more\n") and "old table" not in readme.read_text()
    assert page.index("## 02 Loss ablations") < page.index("## 03 Shot scaling")
    assert "(figures/02_loss_ablations-curves.png)" in page
    assert (docs / "figures" / "03_shot_scaling-curves.png").read_bytes() == b"\x89PNG fake"
    assert "commit abc1234, run on Some CPU (2 cores" in page and "15 minutes in all" in page
    assert page.count("[^run]") == 2


def test_report_refuses_missing_results_and_a_readme_without_markers(tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert cli.main(["report", "--outputs", str(empty), "--readme", ""]) == cli.EXIT_USER_ERROR
    assert "make reproduce" in capsys.readouterr().err
    out = fake_outputs(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert cli.main(["report", "--outputs", str(out), "--docs", str(tmp_path / "d"),
                     "--readme", str(readme)]) == cli.EXIT_USER_ERROR
    assert "no headline block" in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"


def test_the_readme_headline_equals_the_generated_results():
    results = REPO / "docs" / "results.md"
    if not results.is_file():
        pytest.skip("docs/results.md is not generated yet")
    assert publish.headline_block((REPO / "README.md").read_text()) == publish.headline_block(
        results.read_text()), "README.md and docs/results.md differ: run `fsstools report`"


def test_run_record_names_commit_and_machine(tmp_path):
    path = publish.write_run_record(tmp_path, {"00_walkthrough": 61.4}, 0.0)
    record = json.loads(path.read_text())
    assert record["notebook_seconds"] == {"00_walkthrough": 61} and record["cores"] >= 1
    assert record["cpu"] and record["commit"]
    assert record["cpu_training_precision"].split()[0] in ("bf16", "fp32")


def test_the_methods_page_lists_every_method_with_its_label():
    from fsstools.inference import METHODS
    from fsstools.studies import report

    page = (REPO / "docs" / "methods.md").read_text()
    for name in METHODS:
        assert f"| `{name}` | {report.label(name)} |" in page, name
