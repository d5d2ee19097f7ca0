"""bench/amp_curves: the gap arithmetic and verdict, and the three runs on tiny data."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import amp_curves
from fsstools.training import with_run
from tests.test_train import tiny_cfg, tiny_data  # noqa: F401  (fixture)


def curve(val: list[float], loss: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(1, len(val) + 1), "val_miou": val, "train_loss": loss})


def test_gaps_compare_bf16_to_the_seed_spread():
    curves = {
        amp_curves.REFERENCE: curve([0.5, 0.7, 0.8], [1.0, 0.8, 0.7]),
        amp_curves.RESEED: curve([0.45, 0.72, 0.79], [1.1, 0.8, 0.7]),
        amp_curves.BF16: curve([0.52, 0.69, 0.81], [1.0, 0.9, 0.7]),
    }
    val = amp_curves.gaps(curves, "val_miou")
    assert val.bf16_vs_fp32 == pytest.approx(0.02) and val.seed_vs_seed == pytest.approx(0.05)
    assert val.within_noise
    loss = amp_curves.gaps(curves, "train_loss")
    assert loss.bf16_vs_fp32 == pytest.approx(0.1) and loss.seed_vs_seed == pytest.approx(0.1)
    assert loss.within_noise  # equal counts as within
    table = amp_curves.side_by_side(curves)
    assert "bf16_within_seed_noise=yes" in amp_curves.report(table, [val, loss])
    curves[amp_curves.BF16] = curve([0.52, 0.60, 0.81], [1.0, 0.9, 0.7])
    worse = amp_curves.gaps(curves, "val_miou")
    assert worse.bf16_vs_fp32 == pytest.approx(0.10) and not worse.within_noise
    out = amp_curves.report(amp_curves.side_by_side(curves), [worse, loss])
    assert out.splitlines()[-1] == "bf16_within_seed_noise=no"
    assert "bf16 vs fp32 10.000 points" in out


def test_gaps_refuse_an_unfinished_run():
    curves = {
        amp_curves.REFERENCE: curve([0.5, 0.7], [1.0, 0.8]),
        amp_curves.RESEED: curve([0.5, 0.7], [1.0, 0.8]),
        amp_curves.BF16: curve([0.5], [1.0]),
    }
    with pytest.raises(ValueError, match="'bf16' has epochs \\[1\\]"):
        amp_curves.gaps(curves, "val_miou")


@pytest.mark.slow
def test_three_runs_on_tiny_data_then_reused(tmp_path, tiny_data, capsys):  # noqa: F811
    cfg = tiny_cfg(tmp_path, "run.epochs=2", "run.seed=3")
    table, found = amp_curves.run(cfg, tiny_data)
    assert sorted(table["variant"].unique()) == sorted(
        [amp_curves.REFERENCE, amp_curves.RESEED, amp_curves.BF16])
    assert len(table) == 6 and [g.column for g in found] == ["train_loss", "val_miou"]
    loss = table.pivot(index="epoch", columns="variant", values="train_loss")
    # three distinct runs: another seed and another precision each change the curve
    assert loss[amp_curves.RESEED].iloc[0] != loss[amp_curves.REFERENCE].iloc[0]
    assert loss[amp_curves.BF16].iloc[0] != loss[amp_curves.REFERENCE].iloc[0]
    assert found[0].bf16_vs_fp32 == pytest.approx(
        (loss[amp_curves.BF16] - loss[amp_curves.REFERENCE]).abs().max())
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert len(runs) == 3
    capsys.readouterr()
    # finished runs are reused, and say so (the announcement comes with progress output)
    again, _ = amp_curves.run(with_run(cfg, progress=True), tiny_data)
    pd.testing.assert_frame_equal(again, table)
    assert sorted(p.name for p in tmp_path.iterdir()) == runs
    assert capsys.readouterr().out.count("reusing") == 3


def test_cli_bad_config_exits_2(tmp_path, capsys):
    assert amp_curves.cli(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
