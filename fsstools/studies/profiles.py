"""Where a notebook's data lives and how its base models are trained: profiles, the
notebook's first step (:func:`start`), and base models on demand.

A *profile* is the embedded benchmark at one size or a real data set:

- ``"quick"``: a small synthetic set under ``data/synth_quick`` and a short run
  (``configs/synth/quick.yaml``); the notebooks' defaults, shared by all of them.
- ``"full"``: the default synthetic set under ``data/synth`` and
  ``configs/synth/foldN.yaml``; what ``fsstools reproduce`` injects.
- ``"tiny"``: a tiny set under ``data/synth_tiny`` and a few dozen steps of a narrow model
  (``configs/synth/tiny.yaml``): what the test suite runs the notebooks on, never results.
  Setting ``FSSTOOLS_PROFILE`` (the test suite sets ``tiny``) picks the profile of every
  notebook whose caller does not inject one.
- ``dataset="pascal" | "coco" | "coco_to_pascal" | "folder"`` with ``data_root``: that data
  set's test list and the base-training recipe of ``configs/pascal``, ``configs/coco`` or
  ``configs/folder`` (or the notebook's ``train_config``); a folder is your own labelled
  collection (:mod:`fsstools.data.folder`); coco_to_pascal tests COCO-trained models on the PASCAL
  classes they never saw, so ``data_root`` is the PASCAL root and the COCO root is the one
  the training config names.

A notebook's ``checkpoints`` parameter replaces the profile's base models by given ones (the
authors' archive, or one checkpoint per fold; :mod:`fsstools.studies.given_models`): nothing
is trained, and several base seeds collapse to the one model of each fold.

The notebooks reach all of this through :mod:`fsstools.studies.recipes`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsstools import config as config_lib
from fsstools import paths
from fsstools.data import splits, voc
from fsstools.data.synth.benchmark import SynthConfig, ensure_synth
from fsstools.errors import ConfigError, MissingError
from fsstools.evaluation.config import EvalConfig
from fsstools.inference import resolve_gfss_method, resolve_methods
from fsstools.inference.generalized import PI_STRATEGIES
from fsstools.studies import given_models, parameters
from fsstools.training import TrainConfig, ensure_trained, run_directory

DATASETS = ("synth", "pascal", "coco", "coco_to_pascal", "folder")
"""What a notebook's ``dataset`` parameter may name."""
REAL_TRAIN_CONFIGS = {"pascal": "pascal/fold{fold}.yaml", "coco": "coco/fold{fold}.yaml",
                      "coco_to_pascal": "coco/fold{fold}.yaml", "folder": "folder/train.yaml"}
"""Shipped base-training recipes (under configs/) of the real data sets."""
REAL_TEST_LISTS = {"pascal": "lists/val.txt", "coco": "lists/val2014.txt",
                   "coco_to_pascal": "lists/val.txt", "folder": "lists/val.txt"}
"""Test lists of the real data sets, relative to ``data_root``."""
FOLD_PARAMETERS = ("fold", "folds", "coco_folds")
NON_NEGATIVE = ("base_seeds",)
"""Parameters (or lists of them) that must be >= 0."""
AT_LEAST_ONE = ("n_episodes", "n_boot", "walk_shots", "n_pca_images", "coco_n_episodes",
                "coco_size", "shots", "sensitivity_shots", "n_runs")
ZERO_OR_MORE = ("n_queries",)
"""Counts where 0 means "all"."""
"""Parameters (or lists of them) that must be >= 1."""
PROFILES = ("quick", "full", "tiny")
"""The embedded benchmark's profiles."""
PROFILE_ENV = "FSSTOOLS_PROFILE"
"""Environment variable naming the profile of notebooks whose caller injects none."""
METHOD_PARAMETERS = ("methods",)
GFSS_NOTEBOOKS = ("08_generalized_fss",)
"""Notebooks whose ``methods`` are generalized methods (``fsstools.inference.GFSS_METHODS``)
and whose ``pi_strategies`` are priors of DIaM's KL term."""
SUBSETS = {"walk_shots": "shots", "sensitivity_shots": "shots"}
"""Parameters whose values must be among another's (a shot count that has episodes, a fold
that is evaluated)."""


@dataclass(frozen=True)
class Profile:
    """Where a notebook's data lives and how its base models are trained.

    Attributes:
        name: "quick", "full" or "tiny" (embedded benchmark), else the real data set's name.
        synth_root: folder of the synthetic set (one sub-folder per style), absolute; None
            for real data.
        synth: the generating config (None for real data).
        train_config: training YAML (absolute); ``{fold}`` is replaced by the fold.
        dataset: "synth", "pascal", "coco" or "coco_to_pascal".
        data_root: root of the real test data (absolute), None for the embedded benchmark.
        list_file: test list, relative to the test root.
        checkpoints: fold -> a given base model (the notebooks' ``checkpoints``), used
            instead of training; None: base models are trained (or reused).
    """

    name: str
    synth_root: Path | None
    synth: SynthConfig | None
    train_config: str
    dataset: str = "synth"
    data_root: Path | None = None
    list_file: str = "lists/val.txt"
    checkpoints: Mapping[int, Path] | None = None

    def model_seeds(self, base_seeds: Sequence[int]) -> list[int]:
        """The base seeds that have a model of their own: all of them, or with given
        checkpoints only the first (one model per fold)."""
        return list(base_seeds)[:1] if self.checkpoints is not None else list(base_seeds)

    @property
    def train_dataset(self) -> str:
        """The class table the base model is trained on."""
        return "coco" if self.dataset == "coco_to_pascal" else self.dataset

    @property
    def test_dataset(self) -> str:
        """The class table of the test images."""
        return "pascal" if self.dataset == "coco_to_pascal" else self.dataset

    @property
    def n_classes(self) -> int:
        """Classes of the training data set (background not counted)."""
        return splits.n_classes(self.train_dataset, self.data_root)

    @property
    def styles(self) -> tuple[str, ...]:
        """Test styles: the synthetic set's visual domains, or the one real data set."""
        return tuple(self.synth.styles) if self.synth is not None else ("A",)

    def style_root(self, style: str) -> Path:
        """Data root of one visual style ("A": base training and in-domain tests, "B"); real
        data has one style, "A", its ``data_root``."""
        if self.synth_root is not None:
            return self.synth_root / style
        if style != "A":
            raise ConfigError(f"style {style!r} exists only in the embedded benchmark; with "
                              f"dataset {self.dataset} test style A (the data set itself)")
        return self.data_root


def get_profile(name: str) -> Profile:
    """The "quick", "full" or "tiny" profile of the embedded benchmark."""
    profiles = {
        "quick": Profile("quick", paths.data_dir() / "synth_quick",
                         SynthConfig(n_train=1200, n_val=400),
                         str(paths.configs_dir() / "synth" / "quick.yaml")),
        "full": Profile("full", paths.data_dir() / "synth", SynthConfig(),
                        str(paths.configs_dir() / "synth" / "fold{fold}.yaml")),
        "tiny": Profile("tiny", paths.data_dir() / "synth_tiny",
                        SynthConfig(n_train=300, n_val=400, size=64),
                        str(paths.configs_dir() / "synth" / "tiny.yaml")),
    }
    if name not in profiles:
        raise ConfigError(f"unknown profile {name!r}; use one of {sorted(profiles)}",
                          key="profile")
    return profiles[name]


def real_profile(dataset: str, data_root: str | Path, train_config: str = "") -> Profile:
    """The profile of a real data set (the notebooks' ``dataset`` and ``data_root``).

    Args:
        dataset: "pascal", "coco" or "coco_to_pascal" (COCO-trained models tested on PASCAL).
        data_root: root of the test data (relative: to the working folder), holding the
            test list (:data:`REAL_TEST_LISTS`) and the images and masks it names.
        train_config: base-training YAML with ``{fold}``; empty: the shipped recipe.

    Raises:
        ConfigError: an unknown dataset, or no data_root.
        MissingError: the root or its test list does not exist.
    """
    if dataset not in REAL_TRAIN_CONFIGS:
        raise ConfigError(f"parameter dataset: {dataset!r} is not one of {', '.join(DATASETS)}",
                          key="dataset")
    if not data_root:
        raise ConfigError(f"parameter data_root: dataset {dataset} needs the data set's root "
                          "(e.g. papermill -p data_root /data/VOC2012); see the README's "
                          "'Real data' section", key="data_root")
    root = paths.resolve(data_root)
    if not root.is_dir():
        raise MissingError(f"parameter data_root: {root} is not a folder; pass the root of the "
                           f"{dataset} data (relative paths start where papermill runs)")
    list_file = REAL_TEST_LISTS[dataset]
    if dataset == "folder":
        voc.read_pairs(root, list_file)  # the folder's layout, classes and val split, checked
    elif not (root / list_file).is_file():
        raise MissingError(f"parameter data_root: {root} holds no test list {list_file} "
                           "(one 'image mask' pair per line, relative to the root; see "
                           "data/README.md)")
    config = (str(paths.resolve(train_config)) if train_config
              else str(paths.configs_dir() / REAL_TRAIN_CONFIGS[dataset]))
    return Profile(dataset, None, None, config, dataset, root, list_file)


def notebook_profile(profile: str = "quick", dataset: str = "synth", data_root: str = "",
                     train_config: str = "") -> Profile:
    """The profile a notebook's parameters describe (embedded benchmark or real data)."""
    if dataset == "synth":
        if data_root:
            raise ConfigError("parameter data_root: only for real data; set dataset to "
                              "pascal, coco, coco_to_pascal or folder (or leave data_root empty)",
                              key="data_root")
        prof = get_profile(profile)
        if train_config:
            prof = dataclasses.replace(prof, train_config=str(paths.resolve(train_config)))
        return prof
    return real_profile(dataset, data_root, train_config)


def check_values(params: parameters.Parameters) -> None:
    """Values that have the right type but cannot be right (a fold 7, 0 episodes)."""
    for name in FOLD_PARAMETERS:
        for fold in np.atleast_1d(params.get(name, [])):
            splits.check_fold(fold, f"parameter {name}: fold", key=name)
    for name in NON_NEGATIVE:
        values = params.get(name, [])
        config_lib.check_at_least(f"parameter {name}", values, low=0, key=name)
        if len(set(values)) != len(values):
            raise ConfigError(f"parameter {name}: {params[name]} repeats a seed", key=name)
    if "base_seeds" in params.values and not params["base_seeds"]:
        raise ConfigError("parameter base_seeds: give at least one seed, e.g. [0]",
                          key="base_seeds")
    for name in AT_LEAST_ONE:
        if name in params.values:
            config_lib.check_at_least(f"parameter {name}", params[name], key=name)
    for name, among in SUBSETS.items():
        if name in params.values and among in params.values:
            missing = set(np.atleast_1d(params[name]).tolist()) - set(params[among])
            if missing:
                raise ConfigError(f"parameter {name}: {sorted(missing)} not in {among} "
                                  f"{params[among]}; add it there", key=name)
    for name in ZERO_OR_MORE:
        if name in params.values:
            config_lib.check_at_least(f"parameter {name}", params[name], low=0, key=name)
    generalized = params.notebook in GFSS_NOTEBOOKS
    for name in METHOD_PARAMETERS:
        if name in params.values:
            try:
                if generalized:
                    for method in params[name]:
                        resolve_gfss_method(method)
                else:
                    resolve_methods(params[name])
            except ValueError as err:
                raise ConfigError(f"parameter {name}: {err}", key=name) from None
    unknown = [p for p in params.get("pi_strategies", []) if p not in PI_STRATEGIES]
    if unknown:
        raise ConfigError(f"parameter pi_strategies: {', '.join(map(repr, unknown))} is not a "
                          f"prior; use {', '.join(PI_STRATEGIES)}", key="pi_strategies")


def start(notebook: str, namespace: Mapping[str, Any]) -> tuple[Profile, Path]:
    """First step of every notebook: check its parameters, pick its data, make its output
    folder and record the parameters there as ``parameters.json``.

    Args:
        notebook: the notebook's stem, e.g. "03_shot_scaling".
        namespace: the notebook's ``globals()`` (parameters and IPython's history).

    Returns:
        The profile and the output folder: ``output_dir`` (relative: to the working folder,
        where papermill runs), or ``<outputs>/<profile>/<notebook>-<hash of the parameters>``.

    Raises:
        ConfigError, MissingError: a parameter that is unknown, of the wrong type, out of
            range or naming missing data; the message names it.
    """
    params = _profile_from_environment(notebook, parameters.check(notebook, namespace))
    check_values(params)
    prof = notebook_profile(params.get("profile", "quick"), params.get("dataset", "synth"),
                            params.get("data_root", ""), params.get("train_config", ""))
    folds = params.get("folds", [params.get("fold", 0)])
    for fold in folds:
        path = Path(prof.train_config.format(fold=fold))
        if not path.is_file():
            raise MissingError(f"parameter train_config: {path} (fold {fold}) does not exist")
    if params.get("checkpoints", ""):
        prof = given_models.attach(prof, params["checkpoints"], train_config(prof, folds[0]),
                                   folds, params.get("base_seeds", [0]))
    output_dir = params.get("output_dir", "")
    out = (paths.resolve(output_dir) if output_dir
           else paths.outputs_dir() / prof.name / f"{notebook}-{params.key}")
    out.mkdir(parents=True, exist_ok=True)
    record = params.record(out)
    where = (f"data {prof.synth_root}" if prof.synth_root is not None
             else f"{prof.dataset} data {prof.data_root}")
    models = ("given base models" if prof.checkpoints is not None
              else f"base training {prof.train_config}")
    print(f"{notebook}: profile {prof.name}, {where}, {models}; outputs in {out} (parameters "
          f"in {record.name})")
    return prof, out


def _profile_from_environment(notebook: str, params: parameters.Parameters
                               ) -> parameters.Parameters:
    """``params`` with the profile of :data:`PROFILE_ENV` where it is set and the caller
    injected no profile (the embedded benchmark only); said in one line."""
    chosen = os.environ.get(PROFILE_ENV, "")
    if (not chosen or "profile" not in params.values or "profile" in params.injected
            or params.get("dataset", "synth") != "synth" or chosen == params["profile"]):
        return params
    if chosen not in PROFILES:
        raise ConfigError(f"{PROFILE_ENV}={chosen!r} is not a profile; set it to one of "
                          f"{', '.join(PROFILES)}, or unset it", key="profile")
    print(f"{notebook}: profile {chosen} from {PROFILE_ENV} (the notebook's default is "
          f"{params['profile']})")
    return dataclasses.replace(params, values={**params.values, "profile": chosen})


def setup(profile: str, output_dir: str | Path, notebook: str) -> tuple[Profile, Path]:
    """The profile and the output folder, without parameter checks (see :func:`start`).

    Args:
        profile: "quick" or "full".
        output_dir: where results go; relative to the working folder (where papermill
            runs); empty: ``<outputs>/<profile>/<notebook>``.
        notebook: the folder name under the profile when ``output_dir`` is empty.

    Returns:
        The profile and the output folder (absolute, created).
    """
    prof = get_profile(profile)
    out = paths.resolve(output_dir) if output_dir else paths.outputs_dir() / profile / notebook
    out.mkdir(parents=True, exist_ok=True)
    return prof, out


# ----------------------------------------------------------------------------- data, models


def ensure_data(prof: Profile, progress: bool = True) -> Path:
    """The profile's synthetic set (both styles), generated on first use; real data: its
    root, which must exist."""
    if prof.synth is None:
        if not prof.data_root.is_dir():
            raise MissingError(f"data root {prof.data_root} does not exist")
        return prof.data_root
    return ensure_synth(prof.synth_root, prof.synth, progress=progress)


def train_config(prof: Profile, fold: int, overrides: Sequence[str] = (),
                 base_seed: int = 0) -> TrainConfig:
    """The resolved base-training config of ``fold``: on style A of the profile's data, on
    the real data set's root, or (coco_to_pascal) on the COCO root the config names.

    Args:
        base_seed: the training seed (``run.seed``); a seed other than 0 gets its own run
            name (``<name>-seed<k>``), so models of several seeds live side by side.
    """
    path = prof.train_config.format(fold=fold)
    extra = [f"data.fold={fold}", f"run.seed={base_seed}"]
    if prof.dataset != "coco_to_pascal":
        extra.append(f"data.root={prof.style_root('A')}")
    name = None
    if "{fold}" not in prof.train_config:  # one file for all folds: name the run per fold
        name = f"{'synth-' if prof.synth else ''}{prof.name}-fold{fold}"
    if base_seed:
        name = name or config_lib.load(TrainConfig, path, extra).run.name
        name = f"{name}-seed{base_seed}"
    if name:
        extra.append(f"run.name={name}")
    return config_lib.load(TrainConfig, path, [*extra, *overrides])


def ensure_base_model(prof: Profile, fold: int, progress: bool = True,
                      base_seed: int = 0) -> Path:
    """Best checkpoint of the fold's base model trained with ``base_seed``: reused if
    trained, else trained now; with given checkpoints, the fold's (for every base seed)."""
    ensure_data(prof, progress=False)
    if prof.checkpoints is not None:
        if fold not in prof.checkpoints:
            raise MissingError(f"no given base model of fold {fold} (given: folds "
                               f"{', '.join(map(str, prof.checkpoints))}); add that fold to the "
                               "checkpoints parameter's folder or pattern")
        return prof.checkpoints[fold]
    cfg = train_config(prof, fold, base_seed=base_seed)
    run_dir = run_directory(cfg)
    if (run_dir / "done").is_file():
        return ensure_trained(cfg)  # announces the reuse
    print(f"fold {fold}, base seed {base_seed}: training the base model ({cfg.run.epochs} "
          f"epochs) into {run_dir}", flush=True)
    tic = time.perf_counter()
    checkpoint = ensure_trained(cfg)
    if progress:
        print(f"fold {fold}, base seed {base_seed}: trained in {time.perf_counter() - tic:.0f} s",
              flush=True)
    return checkpoint


def run_dir(prof: Profile, fold: int, base_seed: int = 0) -> Path:
    """The finished base-training run of ``fold`` and ``base_seed``."""
    run_dir = run_directory(train_config(prof, fold, base_seed=base_seed))
    if not (run_dir / "done").is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run; call "
                                f"recipes.ensure_base_model(prof, {fold}, base_seed={base_seed}) "
                                "first")
    return run_dir


def fold_eval_config(prof: Profile, fold: int, checkpoint: str | Path, shots: Sequence[int],
                n_episodes: int, style: str = "A", seed: int = 0, device: str = "cpu"
                ) -> EvalConfig:
    """The evaluation of ``checkpoint`` on the fold's novel classes of the profile's test
    data (``style`` of the embedded benchmark), at the profile's test size. Any checkpoint
    of the fold gets the same episode lists: they are keyed by the data, the fold, the
    shots, the count and the seed, never by the model."""
    size = prof.synth.size if prof.synth is not None else train_config(prof, fold).data.val_size
    return EvalConfig(
        dataset=prof.test_dataset,
        root=str(prof.style_root(style)),
        list_file=prof.list_file,
        fold=fold,
        coco_to_pascal=prof.dataset == "coco_to_pascal",
        size=size,
        shots=tuple(shots),
        seeds=(seed,),
        n_episodes=n_episodes,
        checkpoint=str(checkpoint),
        train_config=None,
        device=device,
    )
