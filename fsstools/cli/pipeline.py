"""Commands of the pipeline: ``train``, ``extract``, ``evaluate``."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from fsstools.cli.common import (
    add_accept_edited,
    add_force,
    add_set,
    at_least,
    new_parser,
    yaml_path,
)
from fsstools.constants import FEATURE_DTYPES


def train_parser() -> argparse.ArgumentParser:
    p = new_parser("train", "Base-train PSPNet with cross-entropy on the base classes of a fold "
                "(also under torchrun: torchrun -m fsstools.cli train ...).")
    p.add_argument("--config", required=True, help="YAML file, e.g. configs/synth/fold0.yaml")
    add_set(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    return p


def run_train(args: argparse.Namespace) -> int:
    import torch

    from fsstools import config as config_lib
    from fsstools.training import TrainConfig, main

    overrides = [*args.set, *(["run.resume=true"] if args.resume else [])]
    cfg = config_lib.load(TrainConfig, args.config, overrides)
    run_dir = main(cfg)
    if torch.distributed.is_initialized():
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return 0
    print(run_dir)
    return 0


def extract_parser() -> argparse.ArgumentParser:
    from fsstools.data.transforms import FEATURE_STRIDE

    p = new_parser("extract", "Extract and cache the features of the images of episode lists; "
                "fsstools evaluate with the same checkpoint, files, size and dtype reuses them "
                "(the command to run is printed).")
    p.add_argument("--checkpoint", required=True, type=Path, help="base-model checkpoint")
    p.add_argument("--episodes", required=True, type=Path, nargs="+",
                   help="episode list JSON file(s) of one data root")
    p.add_argument("--size", type=at_least(FEATURE_STRIDE), default=417,
                   help="test-time image size")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=at_least(1), default=32, help="images per forward pass")
    p.add_argument("--dtype", default="float32", choices=FEATURE_DTYPES,
                   help="stored feature precision")
    add_accept_edited(p)
    add_force(p)
    return p


def run_extract(args: argparse.Namespace) -> int:
    from fsstools.data.episodes import load_episode_files
    from fsstools.evaluation import guard
    from fsstools.features import FeatureSettings, ensure_features, episode_list_images

    lists = list(load_episode_files(args.episodes, accept_edited=args.accept_edited).values())
    first = lists[0]
    guard.check_disjoint(args.checkpoint, first.dataset, guard.tested_classes(lists), first.fold,
                         what="extract")
    store = ensure_features(args.checkpoint, first.root, episode_list_images(lists),
                            first.dataset, FeatureSettings(args.size, args.dtype),
                            device=args.device, batch_size=args.batch_size, force=args.force)
    print(f"features {tuple(store.feats.shape)} of {len(store.index)} images cached under key "
          f"{store.key}")
    files = ",".join(map(yaml_path, args.episodes))
    sets = [f"checkpoint={yaml_path(args.checkpoint)}", f"episodes=[{files}]",
            f"dataset={first.dataset}", f"fold={first.fold}", f"size={args.size}",
            f"feature_dtype={args.dtype}"]
    sets += [f"scheme={first.scheme}"] if first.dataset == "coco" else []
    print("evaluate on them with: fsstools evaluate "
          + " ".join(f"--set {shlex.quote(s)}" for s in sets)
          + (" --accept-edited" if args.accept_edited else ""))
    return 0


def evaluate_parser() -> argparse.ArgumentParser:
    p = new_parser("evaluate", "Score inference methods on sampled or saved episodes "
                "(keys: see fsstools.evaluation.pipeline.EvalConfig; methods may be names or variants "
                "such as {name: repri_tpi2, base: repri, t_pi: [2]}); with 'protocol: "
                "generalized' the generalized few-shot protocol (keys: see "
                "fsstools.evaluation.generalized_config.GFSSEvalConfig).")
    p.add_argument("--config", type=Path, help="EvalConfig YAML (e.g. configs/synth/eval.yaml)")
    add_set(p)
    add_accept_edited(p)
    add_force(p)
    return p


def run_evaluate(args: argparse.Namespace) -> int:
    from fsstools import config as config_lib
    from fsstools.evaluation.generalized_config import is_generalized
    from fsstools.evaluation.pipeline import EvalConfig, run_evaluation
    from fsstools.studies import report

    if is_generalized(args.config, args.set):
        return run_generalized_evaluate(args)
    cfg = config_lib.load(EvalConfig, args.config, args.set)
    results = run_evaluation(cfg, force=args.force, accept_edited=args.accept_edited)
    print(report.interval_table(results.summary).to_string())
    print(f"results in {results.out_dir}")
    return 0


def run_generalized_evaluate(args: argparse.Namespace) -> int:
    """``fsstools evaluate`` on a config with ``protocol: generalized``."""
    from fsstools import config as config_lib
    from fsstools.evaluation.generalized import run_generalized
    from fsstools.evaluation.generalized_config import GFSSEvalConfig
    from fsstools.studies import generalized

    if args.accept_edited:
        print("--accept-edited: the generalized protocol reads no episode files; ignored")
    cfg = config_lib.load(GFSSEvalConfig, args.config, args.set)
    results = run_generalized(cfg, force=args.force)
    print(generalized.score_table(results.summary).to_string())
    print(f"results in {results.out_dir}")
    return 0
