"""The paper's table from your own data and the authors' checkpoints (``fsstools paper-check``).

One call checks the data root (every listed image and mask, and the paper's lists), finds the
authors' model of each fold in their archive, evaluates all four folds with the paper's
protocol (``configs/pascal/paper.yaml``: 1000 tasks per fold and shot count, 2 seeded runs,
417 pixels) through the one evaluation pipeline, fold guard included, and writes our scores
beside the paper's (:mod:`fsstools.jobs.paper_table`).

Written under the output folder: ``fold<N>/`` (each fold's evaluation: per-episode rows,
summary, resolved config), ``paper_check.csv`` and ``paper_check.md`` (the comparison) and
``paper_check.yaml`` (the settings and the checkpoint of each fold).

Example:
    >>> check = PaperCheck("pascal", "/data/pascal", "/models")  # doctest: +SKIP
    >>> print(run_paper_check(check).markdown)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from fsstools import config as config_lib
from fsstools import paths
from fsstools.cache import atomic_write_text
from fsstools.data import splits
from fsstools.errors import ConfigError, DataError, MissingError
from fsstools.evaluation.config import EvalConfig
from fsstools.evaluation.pipeline import run_evaluation
from fsstools.jobs import paper_table
from fsstools.models.checkpoints import authors_checkpoints

PAPER_CONFIGS = {"pascal": "pascal/paper.yaml", "coco": "coco/paper.yaml",
                 "coco_to_pascal": "pascal/paper.yaml"}
"""The protocol file of each benchmark, under configs/."""
OPTION_KEYS = ("root", "fold", "shots", "seeds", "n_episodes", "size", "device", "methods",
               "checkpoint", "train_config", "coco_to_pascal", "out_dir")
"""EvalConfig keys paper-check sets from its own options (``--set`` may not)."""
HASH_LENGTH = 8


@dataclass(frozen=True)
class PaperCheck:
    """What ``fsstools paper-check`` runs.

    Attributes:
        dataset: "pascal", "coco" or "coco_to_pascal" (COCO-trained models, PASCAL tasks).
        data_root: root of the test data (PASCAL for pascal and coco_to_pascal).
        checkpoints: the folder where the authors' archive was unpacked (holds model_ckpt/).
        arch: the trunk of the authors' models to use (``pspnet_<arch>`` in the archive).
        shots, methods, n_episodes, size, device: as in
            :class:`~fsstools.evaluation.config.EvalConfig`.
        runs: seeded task lists per fold and shot count; their seeds are seed, seed + 1, ...
        seed: the first run's seed.
        out: output folder; None: ``<outputs>/paper-check/<dataset>-<arch>-<hash>``.
        overrides: further EvalConfig keys (``key=value``), e.g. ``n_boot=2000``.
        check_data: read every listed image and mask first (and require the paper's lists).
    """

    dataset: str
    data_root: str | Path
    checkpoints: str | Path
    arch: str = "resnet50"
    shots: tuple[int, ...] = (1, 5)
    methods: tuple[str, ...] = ("repri", "oracle_repri")
    n_episodes: int = 1000
    runs: int = 2
    seed: int = 2020
    size: int = 417
    device: str = "cpu"
    out: str | Path | None = None
    overrides: tuple[str, ...] = ()
    check_data: bool = True

    @property
    def train_dataset(self) -> str:
        """The data set the authors' models were trained on."""
        return "coco" if self.dataset == "coco_to_pascal" else self.dataset

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.seed + r for r in range(self.runs))


@dataclass(frozen=True)
class PaperResult:
    """What :func:`run_paper_check` computed and where it wrote it.

    Attributes:
        table: :func:`fsstools.jobs.paper_table.compare` rows.
        markdown: what was run and the table, as markdown (``paper_check.md``).
        rows: every fold's per-episode rows.
        out_dir: the output folder.
    """

    table: pd.DataFrame
    markdown: str
    rows: pd.DataFrame
    out_dir: Path


def check_settings(check: PaperCheck) -> None:
    """Cheap checks of ``check`` before any file is read.

    Raises:
        ConfigError: an unknown benchmark, fewer than one run, or a ``--set`` of a key an
            option owns.
    """
    paper_table.paper_numbers(check.dataset)  # an unknown benchmark stops here
    config_lib.check_at_least("--runs", check.runs, what="seeded runs")
    for item in check.overrides:
        key = config_lib.parse_override(item)[0]
        if key in OPTION_KEYS:
            raise ConfigError(f"--set {item}: paper-check sets {key} itself; use its option "
                              "(--data-root, --shots, --methods, --n-episodes, --runs, --seed, "
                              "--size, --device, --out)", key=key)


def check_data_root(check: PaperCheck, progress: bool = True) -> None:
    """``fsstools data-check`` of a PASCAL root with the paper's lists.

    Raises:
        DataError: every problem found, each with its fix.
    """
    from fsstools.data.check import check_pascal, problems_message

    if check.dataset == "coco":
        print(f"{check.data_root}: COCO masks are checked as `fsstools coco-masks` writes them "
              "(data-check reads PASCAL roots)")
        return
    root = paths.resolve(check.data_root)
    problems = check_pascal(root, paper_lists=True, progress=progress)
    if problems:
        raise DataError(problems_message(root, problems))
    print(f"{root}: no problem found (the paper's lists)")


def fold_checkpoints(check: PaperCheck) -> dict[int, Path]:
    """The authors' model of every fold (all four are needed).

    Raises:
        MissingError: the archive lacks a fold.
        DataError: a file that is not the model its folder names.
    """
    found = authors_checkpoints(paths.resolve(check.checkpoints), check.train_dataset,
                                check.arch)
    missing = [f for f in range(splits.N_FOLDS) if f not in found]
    if missing:
        raise MissingError(
            f"the authors' archive under {check.checkpoints} has no {check.train_dataset} "
            f"{check.arch} model of fold(s) {', '.join(map(str, missing))} (found: "
            f"{', '.join(map(str, sorted(found)))}); the paper's table needs all four: unpack "
            "the whole archive"
        )
    return found


def out_dir(check: PaperCheck) -> Path:
    """``check.out``, else a folder of ``<outputs>/paper-check`` named by the settings."""
    if check.out:
        return paths.resolve(check.out)
    settings = config_lib.to_dict(dataclasses.replace(check, out=None))
    settings["data_root"] = str(paths.resolve(check.data_root))
    settings["checkpoints"] = str(paths.resolve(check.checkpoints))
    key = config_lib.config_hash(settings, HASH_LENGTH)
    return paths.outputs_dir() / "paper-check" / f"{check.dataset}-{check.arch}-{key}"


def fold_config(check: PaperCheck, fold: int, checkpoint: Path | None = None,
                out: Path | None = None) -> EvalConfig:
    """The benchmark's protocol file, then ``check.overrides``, then ``check``'s options,
    for one fold (``checkpoint`` and ``out`` None: not known yet, for the early check)."""
    cfg = config_lib.load(EvalConfig, paths.configs_dir() / PAPER_CONFIGS[check.dataset],
                          check.overrides)
    return dataclasses.replace(
        cfg, root=str(paths.resolve(check.data_root)), fold=fold, shots=check.shots,
        seeds=check.seeds, n_episodes=check.n_episodes, size=check.size, device=check.device,
        methods=check.methods, checkpoint=None if checkpoint is None else str(checkpoint),
        train_config=None, coco_to_pascal=check.dataset == "coco_to_pascal",
        out_dir=None if out is None else str(out / f"fold{fold}"),
    )


def run_paper_check(check: PaperCheck, progress: bool = True, force: bool = False
                    ) -> PaperResult:
    """Check the data, evaluate the four folds with the authors' models and compare.

    Raises:
        ConfigError: a bad setting (before anything is read).
        DataError: problems of the data root (all of them, before anything is computed), or
            an archive file that is not the model its folder names.
        MissingError: no archive, or one without all four folds.
        ConflictError: ``out`` holds results of other settings, or a checkpoint whose
            training classes include a fold's test classes (the fold guard).
    """
    check_settings(check)
    fold_config(check, 0)  # every key and value checked before the data is read
    if check.check_data:
        check_data_root(check, progress)
    checkpoints = fold_checkpoints(check)
    out = out_dir(check)
    configs = {f: fold_config(check, f, path, out) for f, path in checkpoints.items()}
    frames = []
    for fold, cfg in configs.items():
        print(f"fold {fold}: {checkpoints[fold]}", flush=True)
        frames.append(run_evaluation(cfg, progress=progress, force=force).rows)
    rows = pd.concat(frames, ignore_index=True)
    ours = paper_table.ours_table(rows, n_boot=configs[0].n_boot)
    table = paper_table.compare(ours, check.dataset)
    text = "\n".join([*heading(check, configs[0]), "", paper_table.markdown(table), ""])
    _write(out, check, configs, checkpoints, table, text)
    return PaperResult(table, text, rows, out)


def _write(out: Path, check: PaperCheck, configs: dict[int, EvalConfig],
           checkpoints: dict[int, Path], table: pd.DataFrame, text: str) -> None:
    first = configs[0]
    settings = {
        "paper_check": {**config_lib.to_dict(check), "data_root": first.root,
                        "checkpoints": str(paths.resolve(check.checkpoints)),
                        "out": str(out)},
        "protocol": str(paths.configs_dir() / PAPER_CONFIGS[check.dataset]),
        "checkpoints": {f: str(p) for f, p in checkpoints.items()},
        "eval": {k: v for k, v in config_lib.to_dict(first).items()
                 if k not in ("fold", "checkpoint", "out_dir")},
        "fold_results": {f: cfg.out_dir for f, cfg in configs.items()},
    }
    atomic_write_text(out / "paper_check.yaml", yaml.safe_dump(settings, sort_keys=False))
    atomic_write_text(out / "paper_check.csv", table.to_csv(index=False))
    atomic_write_text(out / "paper_check.md", text)


def heading(check: PaperCheck, cfg: EvalConfig) -> list[str]:
    """The lines above the markdown table: what was run, on what, with what interval."""
    name = {"pascal": "PASCAL-5i", "coco": "COCO-20i", "coco_to_pascal": "COCO-20i -> PASCAL"}
    return [
        f"# {name[check.dataset]}: ours beside the RePRI paper (mIoU %, {check.arch})",
        "",
        f"Data {cfg.root} ({cfg.list_file}); the authors' checkpoints under "
        f"{paths.resolve(check.checkpoints)}; {cfg.n_episodes} tasks per fold, shot count and "
        f"run, {len(cfg.seeds)} run(s) (seeds {', '.join(map(str, cfg.seeds))}), images at "
        f"{cfg.size} pixels. Ours: IoU summed per class over a run's tasks, mean over the "
        f"fold's classes (background excluded), mean over runs; 95% interval over "
        f"{paper_table.INTERVAL} ({cfg.n_boot} resamples). Paper: the README of the authors' "
        "repository (ResNet-50). Difference: ours - paper, in points.",
    ]
