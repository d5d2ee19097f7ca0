"""Result pages generated from a main job's outputs (fsstools report), and the README's
headline table and reading, which must equal the generated ones."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fsstools import cli
from fsstools.jobs import publish

REPO = Path(__file__).resolve().parent.parent


def diff_rows(values: dict[str, tuple[float, float, float]], shots=(1, 5), **extra
              ) -> list[dict]:
    """Difference rows (fractions): ``values[key] = (mid, low, high)`` at 1 shot, shifted
    by +0.01 per further shot count."""
    return [{"method": m, "shots": k, "miou": v[0] + 0.01 * i, "miou_low": v[1] + 0.01 * i,
             "miou_high": v[2] + 0.01 * i, "interval": "base seeds x episodes", **extra}
            for m, v in values.items() for i, k in enumerate(shots)]


def reading_tables(out: Path) -> None:
    """The tables the README's reading is written from, with gaps whose bounds round to 0.0
    (CE at 5 shots: above 0 by a hair; CE + H: touching 0)."""
    def save(stem: str, name: str, rows) -> None:
        (out / stem).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(out / stem / f"{name}.csv", index=False)

    save("03_shot_scaling", "difference_to_repri", diff_rows({
        "panet": (-0.185, -0.194, -0.176), "inductive": (-0.262, -0.284, -0.242),
        "ce": (-0.004, -0.0098, 0.0)}))
    save("03_shot_scaling", "difference_to_repri_per_base_seed", [
        {"method": m, "shots": 1, "base_seed": s, "miou_diff": d}
        for m, ds in {"ce": (-0.031, -0.037, 0.003), "repri": (0.0, 0.0, 0.0)}.items()
        for s, d in enumerate(ds)])
    save("02_loss_ablations", "difference_to_repri", diff_rows({
        "ce_h": (0.004, -0.003, 0.012), "ce_kl": (-0.092, -0.103, -0.082),
        "oracle_repri_weights": (0.117, 0.106, 0.126)}))
    save("02_loss_ablations", "difference_to_repri_per_base_seed", [
        {"method": "ce_support", "shots": 1, "base_seed": s, "miou_diff": d}
        for s, d in enumerate((-0.332, -0.322, -0.272))])
    save("04_domain_shift", "difference_to_repri", diff_rows(
        {"ce": (-0.108, -0.12, -0.094)}, domain="A -> B"))
    save("04_domain_shift", "drop", [{"method": "repri", "shots": 1, "drop_points": 23.6}])
    save("05_proportion_prior", "prior_error_summary", [
        {"shots": 1, "stage": "final (t=T)", "median_error": 0.302, "within_10pct": 0.253}])
    save("05_proportion_prior", "delta_difference", [
        {"config": "oracle_repri_weights", "prior_delta": d, "shots": 1, "miou": m,
         "miou_low": lo, "miou_high": hi}
        for d, m, lo, hi in ((0.1, 0.002, 0.0004, 0.003), (0.3, -0.003, -0.007, 0.001))])
    save("06_meta_learning", "differences", [
        {"contrast": "CE + RePRI vs PFENet + head (own)", "a": "CE + RePRI",
         "b": "PFENet + head (own)", "shots": k, "miou": m, "miou_low": lo, "miou_high": hi}
        for k, m, lo, hi in ((1, 0.05, 0.0004, 0.061), (10, 0.129, 0.119, 0.14))])


def fake_outputs(root: Path) -> Path:
    """A main job's folder: 03's fold means, two notebooks' fragments and figures, and the
    tables of the reading."""
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
    reading_tables(out)
    (out / publish.RUN_RECORD).write_text(json.dumps({
        "commit": "abc1234", "uncommitted_changes": False, "cpu": "Some CPU", "cores": 2,
        "cpu_training_precision": "bf16 (x)", "torch": "2.14.1", "started": "2026-12-04 06:00",
        "notebook_seconds": {"02_loss_ablations": 600, "03_shot_scaling": 300},
        "total_seconds": 900}))
    return out


def test_report_writes_results_and_the_readme_headline(tmp_path, capsys):
    out = fake_outputs(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{publish.BEGIN}\nold table\n{publish.END}\n\n"
                      f"{publish.READING_BEGIN}\n- old reading\n{publish.READING_END}\nmore\n")
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


def test_report_writes_the_same_reading_into_results_and_the_readme(tmp_path):
    out = fake_outputs(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"{publish.BEGIN}\n|\n{publish.END}\n\n"
                      f"{publish.READING_BEGIN}\n- old reading\n{publish.READING_END}\n")
    publish.write_report(out, tmp_path / "docs", readme)
    reading = publish.reading_block((tmp_path / "docs" / "results.md").read_text())
    assert publish.reading_block(readme.read_text()) == reading and "old reading" not in reading
    bullets = reading.split("\n")
    assert [b[:b.index("**", 4) + 2] for b in bullets] == [
        "- **Against the inductive baselines**", "- **RePRI's transductive terms over CE from "
        "the same start**", "- **The true foreground proportion**", "- **Under a style shift**",
        "- **Against meta-learned peers**", "- **The benchmark's caveat.**"]
    # the notebooks' sentences, verbatim: one rule, bounds that never print as 0.0
    assert ("CE from query-mean bias minus RePRI (paper text): -0.4 [-1.0, 0] at 1 shot "
            "(level); +0.6 [+<0.05, +1.0] at 5 shots (ahead).") in reading
    assert "Gain from 1 to 5 shots (points of mIoU, point estimates): Two prototypes" in reading
    assert "1 shot: -3.1 / -3.7 / +0.3 (range 4.0)" in reading
    assert "up to 6.0 points (CE probe from support-fit bias (inductive) minus" in reading
    assert "+10%: +0.2 [+<0.05, +0.3]" in reading and "Level with the exact prior at +30%" in reading
    assert "PASCAL-5i: +14.2 and +11.1 at 1 and 5 shots" in reading
    assert "PASCAL-5i: -1.7 and +4.9 at 1 and 5 shots" in reading
    # ahead at 1 shot by a bound under 0.05 is not "on par"
    assert "The paper's claim (on par at 1 shot, read as level; ahead by more as shots grow) " \
           "holds for its growth half only" in reading
    assert "[+0.0" not in reading and "[-0.0" not in reading and "0.0]" not in reading


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


def test_the_reading_leaves_out_what_the_job_did_not_write(tmp_path):
    from fsstools.studies import headline

    tables = headline.load_tables(fake_outputs(tmp_path))
    assert "06_meta_learning/differences" in tables and len(headline.findings(tables)) == 6
    del tables["06_meta_learning/differences"], tables["02_loss_ablations/difference_to_repri"]
    notes = headline.findings(tables)
    assert len(notes) == 5 and not any("meta-learned" in n or "CE + KL" in n for n in notes)
    (only,) = headline.findings({})
    assert only.startswith("- **The benchmark's caveat.**")


@pytest.mark.parametrize("block", [publish.headline_block, publish.reading_block])
def test_the_readme_blocks_equal_the_generated_results(block):
    results = REPO / "docs" / "results.md"
    if not results.is_file():
        pytest.skip("docs/results.md is not generated yet")
    assert block((REPO / "README.md").read_text()) == block(
        results.read_text()), "README.md and docs/results.md differ: run `fsstools report`"


def test_run_record_names_commit_and_machine(tmp_path):
    path = publish.write_run_record(tmp_path, {"00_walkthrough": 61.4}, 0.0)
    record = json.loads(path.read_text())
    assert record["notebook_seconds"] == {"00_walkthrough": 61} and record["cores"] >= 1
    assert record["cpu"] and record["commit"]
    assert record["cpu_training_precision"].split()[0] in ("bf16", "fp32")


class FakeClock:
    """``time.perf_counter`` under the test's control."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_run_clock_adds_an_interrupted_invocation_to_the_next(tmp_path, monkeypatch):
    import time

    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake)
    first = publish.RunClock(tmp_path, heartbeat_s=None)
    first.start("00_walkthrough")
    fake.now += 40
    first.stop()
    first.start("01_base_training")
    fake.now += 100
    first.save()  # the heartbeat's last write before the process is killed
    fake.now += 7  # lost with the kill
    second = publish.RunClock(tmp_path, heartbeat_s=None)
    assert second.state["invocations"] == 2
    assert second.state["seconds"] == {"00_walkthrough": 40.0, "01_base_training": 100.0}
    for name, spent in [("00_walkthrough", 1), ("01_base_training", 20), ("02_loss_ablations", 30)]:
        second.start(name)
        fake.now += spent
        second.stop()
    timed = second.finish()
    assert timed["seconds"] == {"00_walkthrough": 41.0, "01_base_training": 120.0,
                                "02_loss_ablations": 30.0}
    assert timed["invocations"] == 2 and timed["untimed_earlier"] is False
    assert not (tmp_path / publish.LEDGER).exists()
    record = json.loads(publish.write_run_record(tmp_path, timed["seconds"], timed["started"],
                                                 timed["invocations"]).read_text())
    note = publish.footnote(record)
    assert "3 minutes in all over 2 invocations" in note and "01 2.0" in note


def test_the_run_clock_says_when_earlier_results_were_not_timed(tmp_path):
    (tmp_path / "02_loss_ablations").mkdir()
    (tmp_path / "02_loss_ablations" / "summary.md").write_text("# 02\n")
    assert publish.RunClock(tmp_path, heartbeat_s=None).finish()["untimed_earlier"] is True
    (tmp_path / publish.LEDGER).write_text("{not json")
    clock = publish.RunClock(tmp_path, heartbeat_s=None)
    assert clock.state["invocations"] == 1 and clock.state["untimed_earlier"] is True
    record = json.loads(publish.write_run_record(tmp_path, {"00_walkthrough": 60}, 0.0,
                                                 untimed_earlier=True).read_text())
    assert "reused results of an earlier run" in publish.footnote(record)
    fresh = tmp_path / "fresh"
    assert publish.RunClock(fresh, heartbeat_s=None).finish()["untimed_earlier"] is False


def test_the_run_clock_beats_while_a_notebook_runs(tmp_path):
    import time

    clock = publish.RunClock(tmp_path, heartbeat_s=0.02)
    clock.start("06_meta_learning")
    deadline = time.monotonic() + 10
    seconds = {}
    while time.monotonic() < deadline and not seconds.get("06_meta_learning"):
        time.sleep(0.05)
        seconds = json.loads((tmp_path / publish.LEDGER).read_text())["seconds"]
    clock.finish()
    assert seconds.get("06_meta_learning", 0) > 0, "the ledger was not rewritten while running"


def test_a_resumed_main_job_records_the_time_of_both_invocations(tmp_path, monkeypatch):
    import time

    from fsstools.jobs import reproduce

    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake)
    books = [Path(f"{n}.ipynb") for n in ("00_a", "01_b")]
    monkeypatch.setattr(reproduce, "list_notebooks", lambda only=None: books)
    interrupt = {"01_b"}

    def run_notebook(nb, out, overrides):
        fake.now += 60
        if nb.stem in interrupt:
            interrupt.clear()
            raise KeyboardInterrupt
        (out / nb.stem).mkdir(parents=True, exist_ok=True)
        (out / nb.stem / "summary.md").write_text(f"## {nb.stem}\n")
        return reproduce.NotebookRun(nb.stem, 60.0, out / nb.stem)

    monkeypatch.setattr(reproduce, "run_notebook", run_notebook)
    with pytest.raises(KeyboardInterrupt):
        reproduce.reproduce(out=tmp_path)
    assert not (tmp_path / publish.RUN_RECORD).exists()
    reproduce.reproduce(out=tmp_path)
    record = publish.read_run_record(tmp_path)
    assert record["notebook_seconds"] == {"00_a": 120, "01_b": 60}
    assert record["invocations"] == 2 and record["untimed_earlier"] is False


def test_the_methods_page_lists_every_method_with_its_label():
    from fsstools.inference import METHODS
    from fsstools.studies import report

    page = (REPO / "docs" / "methods.md").read_text()
    for name in METHODS:
        assert f"| `{name}` | {report.label(name)} |" in page, name


RETIRED_NAMES = ("support-fit prototype", "single prototype with", "one-prototype variant",
                 "authors' config (300", "RePRI's settings (50")
"""Other names the labelled methods once went by; each method has one name, its label."""


def test_each_method_goes_by_its_label_only():
    import json

    pages = {p: p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")]}
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        pages[nb] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    for path, text in pages.items():
        flat = " ".join(text.split())
        for name in RETIRED_NAMES:
            assert name not in flat, f"{path.name} calls a method {name!r}: use its label"
