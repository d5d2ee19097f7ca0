"""Reading model checkpoints: ours, the RePRI/PFENet reference layout and the RePRI archive.

Our checkpoints are dicts with ``format == CHECKPOINT_FORMAT``, the model state dict under
``model``, the architecture under ``model_config`` and the number of classes under
``n_classes`` (plus training state in ``last.pt``; see ``fsstools.train``).

The reference code saves ``{"epoch", "state_dict", "optimizer"}`` from a DDP-wrapped model, so
its keys read ``module.layer0.0.weight`` (stem as one Sequential), ``module.layer1..4.*``
(torchvision block names), ``module.ppm.features.<i>.<1|2>.*`` (conv, BN of a pooling branch),
``module.bottleneck.<0|1>.*`` and ``module.classifier.*``. The RePRI authors' archive holds
one such file per fold where their test script reads it (:func:`authors_checkpoints`).
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from fsstools.config import from_dict
from fsstools.data import splits
from fsstools.errors import ConfigError, DataError, MissingError
from fsstools.models.backbones import TRUNKS
from fsstools.models.panet import PANet, PANetConfig
from fsstools.models.pfenet import PFENet, PFENetConfig
from fsstools.models.pspnet import ModelConfig, PSPNet

CHECKPOINT_FORMAT = "fsstools.pspnet/1"
PANET_FORMAT = "fsstools.panet/1"
PFENET_FORMAT = "fsstools.pfenet/1"
"""Episodic peers: ``model_config`` (their encoder or frozen trunk) and their own settings
under ``panet_config`` / ``pfenet_config``; everything else as in base checkpoints."""

# Reference stem Sequential: conv, bn, relu (x3 with the deep stem), then max-pool.
_DEEP_STEM = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}
_SHALLOW_STEM = {"0": "conv1", "1": "bn1"}
_PPM_PARTS = {"1": "conv", "2": "bn"}
_REFERENCE_BINS = (1, 2, 3, 6)


_UNREADABLE = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
               ValueError, AttributeError, ImportError)
"""What torch.load raises on a truncated, foreign or corrupt file (torch's own messages name
no path: "PytorchStreamReader failed reading zip archive", "Weights only load failed")."""


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint file on CPU (tensors and plain data only, never arbitrary code).

    ``mmap``: map the tensors of a zip-format file instead of reading them, for a look at
    shapes that does not read a whole large file.

    Raises:
        MissingError: no such file.
        DataError: the file cannot be read as a PyTorch checkpoint (truncated by an
            interrupted copy, another format, or pickled Python objects).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingError(
            f"checkpoint {path} does not exist; train one with `fsstools train --config ...` "
            f"or check the path"
        )
    try:
        mmap = mmap and zipfile.is_zipfile(path)  # the legacy format cannot be mapped
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except _UNREADABLE as err:
        # torch's first sentence says what failed; the rest is advice given here anyway
        first = re.split(r"(?<=\.) ", str(err).strip())[0].rstrip(".") or type(err).__name__
        raise DataError(
            f"checkpoint {path} ({path.stat().st_size} bytes) cannot be read as a PyTorch "
            f"checkpoint ({first}); it is truncated (an interrupted copy or save), corrupt or "
            "not a checkpoint: copy it again or re-train it with `fsstools train`"
        ) from err


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """Everything in one of our checkpoints except tensors of state (model, optimizer, ...).

    Holds ``model_config``, ``n_classes``, ``config`` (the resolved training config),
    ``epoch``, ``metrics`` and ``classes`` (base class ids in relabelling order).
    """
    ckpt = read_checkpoint(path)
    heavy = {"model", "optimizer", "scheduler", "scaler", "rng"}
    return {k: v for k, v in ckpt.items() if k not in heavy}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> PSPNet | PANet | PFENet:
    """A model in eval mode from one of our checkpoints (base PSPNet, or an episodic PANet-
    or PFENet-style peer) or a reference RePRI/PFENet PSPNet one. Every kind has
    ``extract_features(images) -> (B, C, h, w)``, so the feature cache serves them all."""
    ckpt = read_checkpoint(path)
    if isinstance(ckpt, dict) and ckpt.get("format") in _BUILDERS:
        try:
            cfg = dataclasses.replace(from_dict(ModelConfig, ckpt["model_config"]),
                                      pretrained=None)
            model = _BUILDERS[ckpt["format"]](cfg, ckpt)
            model.load_state_dict(ckpt["model"])
        except (KeyError, ConfigError, RuntimeError) as err:
            raise DataError(
                f"checkpoint {path} is an fsstools checkpoint whose model cannot be rebuilt "
                f"({str(err).strip().splitlines()[0]}); it was written by another version or "
                "edited: re-train it with `fsstools train`"
            ) from err
    else:
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or not any("layer0." in str(k) for k in state):
            raise DataError(
                f"checkpoint {path} is neither an fsstools checkpoint nor a reference PSPNet "
                "state dict (no 'format' key and no 'layer0.' keys); pass a best.pt of "
                "`fsstools train` or a RePRI/PFENet PSPNet checkpoint"
            )
        try:
            model = model_from_reference(state)
        except (ValueError, KeyError, RuntimeError) as err:
            raise DataError(
                f"checkpoint {path} looks like a reference state dict but does not fit a "
                f"PSPNet ({str(err).strip().splitlines()[0]}); pass a RePRI/PFENet PSPNet "
                "checkpoint (not a meta-learner's)"
            ) from err
    return model.to(device).eval()


_BUILDERS = {
    CHECKPOINT_FORMAT: lambda cfg, ckpt: PSPNet(cfg, ckpt["n_classes"]),
    PANET_FORMAT: lambda cfg, ckpt: PANet(cfg, from_dict(PANetConfig, ckpt["panet_config"])),
    PFENET_FORMAT: lambda cfg, ckpt: PFENet(cfg, from_dict(PFENetConfig, ckpt["pfenet_config"])),
}
"""The untrained model of each of our checkpoint formats, from its ``model_config``."""


def load_trunk(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], list[int]]:
    """The trunk of one of our base (PSPNet) checkpoints, for a frozen-trunk peer.

    Returns:
        its architecture (``pretrained`` cleared), the trunk's state dict (keys without the
        ``backbone.`` prefix) and the base classes it was trained on, in label order.

    Raises:
        DataError: ``path`` is not one of our base checkpoints.
    """
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(
            f"checkpoint {path} is not an fsstools base checkpoint (format {CHECKPOINT_FORMAT}); "
            "give the best.pt of a base training run (`fsstools train --config "
            "configs/synth/fold0.yaml`)"
        )
    cfg = dataclasses.replace(from_dict(ModelConfig, ckpt["model_config"]), pretrained=None)
    prefix = "backbone."
    trunk = {k.removeprefix(prefix): v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    return cfg, trunk, [int(c) for c in ckpt["classes"]]


def model_from_reference(state: dict[str, torch.Tensor],
                         bins: tuple[int, ...] = _REFERENCE_BINS) -> PSPNet:
    """Build a PSPNet matching a reference state dict and load it (strictly).

    ``bins`` cannot be read from the weights (pooling has none); the reference uses (1, 2, 3, 6).
    """
    cfg, n_classes = infer_reference_config(state, bins)
    model = PSPNet(cfg, n_classes)
    model.load_state_dict(convert_reference_state_dict(state))
    return model


def convert_reference_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename reference PSPNet keys (``module.layer0.0.weight`` ...) to ours.

    Raises:
        ValueError: keys that belong to no PSPNet part (e.g. a PFENet meta-learner head).
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    stem = _DEEP_STEM if "layer0.6.weight" in state else _SHALLOW_STEM
    out, unknown = {}, []
    for key, value in state.items():
        new = _rename(key, stem)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"unrecognised keys in reference state dict: {unknown[:10]}")
    return out


def _rename(key: str, stem: dict[str, str]) -> str | None:
    if m := re.fullmatch(r"layer0\.(\d+)\.(.+)", key):
        name = stem.get(m[1])
        return None if name is None else f"backbone.{name}.{m[2]}"
    if re.match(r"layer[1-4]\.", key):
        return f"backbone.{key}"
    if m := re.fullmatch(r"ppm\.features\.(\d+)\.(\d+)\.(.+)", key):
        part = _PPM_PARTS.get(m[2])
        return None if part is None else f"ppm.branches.{m[1]}.{part}.{m[3]}"
    if re.fullmatch(r"bottleneck\.[01]\..+|classifier\.(weight|bias)", key):
        return key
    return None


def infer_reference_config(state: dict[str, torch.Tensor],
                           bins: tuple[int, ...] = _REFERENCE_BINS) -> tuple[ModelConfig, int]:
    """Architecture and class count of a reference PSPNet state dict, read from its shapes."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    depths = tuple(
        len({int(m[1]) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.", k))})
        for i in range(1, 5)
    )
    widths = tuple(int(state[f"layer{i}.0.conv1.weight"].shape[0]) for i in range(1, 5))
    arch = next(
        (name for name, s in TRUNKS.items() if s.block == block and s.depths == depths), None
    )
    if arch is None:
        raise ValueError(f"no known trunk has {block} blocks with depths {depths}")
    spec = TRUNKS[arch]
    n_branches = len({k.split(".")[2] for k in state if k.startswith("ppm.features.")})
    if n_branches != len(bins):
        raise ValueError(f"state dict has {n_branches} pooling branches but bins={bins}")
    cfg = ModelConfig(
        arch=arch,
        deep_stem="layer0.6.weight" in state,
        pretrained=None,
        bottleneck_dim=int(state["bottleneck.0.weight"].shape[0]),
        bins=tuple(bins),
        widths=None if widths == spec.widths else widths,
        stem_width=int(state["layer0.0.weight"].shape[0]),
    )
    if cfg.stem_width == spec.stem_width:
        cfg = dataclasses.replace(cfg, stem_width=None)
    return cfg, int(state["classifier.weight"].shape[0])


AUTHORS_LAYOUT = ("model_ckpt/{dataset}/split={fold}/model/pspnet_{arch}/smoothing=True/"
                  "mixup=False/best.pth")
"""Where the RePRI test script reads the checkpoint of a fold (their ``get_model_dir``)."""
_AUTHORS_SPLIT = re.compile(r"(?:^|/)model_ckpt/(pascal|coco)/split=(\d+)/model/pspnet_[^/]+/")


def authors_split(path: str | Path) -> tuple[str, int] | None:
    """The data set and fold an authors' checkpoint was trained on, read from where it lies
    in their archive (``model_ckpt/<dataset>/split=<fold>/model/...``); None elsewhere.

    Example:
        >>> authors_split("/m/model_ckpt/pascal/split=2/model/pspnet_resnet50/"
        ...               "smoothing=True/mixup=False/best.pth")
        ('pascal', 2)
    """
    m = _AUTHORS_SPLIT.search(Path(path).as_posix())
    if m is None or int(m[2]) >= splits.N_FOLDS:
        return None
    return m[1], int(m[2])


def authors_checkpoints(folder: str | Path, dataset: str = "pascal",
                        arch: str = "resnet50") -> dict[int, Path]:
    """The RePRI authors' checkpoint of each fold, found in their archive as unpacked.

    Each file is opened (tensors mapped, not read) and checked to be a reference PSPNet
    with ``arch`` and the benchmark's classifier: 16 outputs for PASCAL-5i, 61 for COCO-20i
    (base classes + background).

    Args:
        folder: the folder holding ``model_ckpt/`` (``AUTHORS_LAYOUT``), or ``model_ckpt/``
            itself, or ``model_ckpt/<dataset>/``.
        dataset: "pascal" or "coco".
        arch: "resnet50" or "resnet101" (``pspnet_<arch>`` in the path).

    Returns:
        fold -> ``best.pth`` path, for the folds the archive holds (at least one).

    Raises:
        MissingError: no checkpoint of ``dataset`` and ``arch`` under ``folder``.
        DataError: a file that cannot be read, is not a reference PSPNet, has another trunk or
            another number of classifier outputs (the message names the file).
    """
    if dataset not in ("pascal", "coco"):
        raise ConfigError(f"the authors' archive holds pascal and coco models, not {dataset!r}")
    folder = Path(folder)
    holder = folder  # the folder holding model_ckpt/
    if folder.name == "model_ckpt":
        holder = folder.parent
    elif folder.name == dataset and folder.parent.name == "model_ckpt":
        holder = folder.parent.parent
    rel = AUTHORS_LAYOUT.format(dataset=dataset, fold="{fold}", arch=arch)
    found = {fold: holder / rel.format(fold=fold) for fold in range(splits.N_FOLDS)}
    found = {fold: path for fold, path in found.items() if path.is_file()}
    if not found:
        archs = sorted({f"{p.parts[-4]}/{p.name}"
                        for p in holder.glob("model_ckpt/*/split=*/model/pspnet_*")})
        raise MissingError(
            f"no checkpoint of {dataset} {arch} under {folder} (looked for "
            f"{holder / rel.format(fold='N')}, N = 0..3; models there: "
            f"{', '.join(archs) or 'none'}); pass the folder where the authors' archive was "
            "unpacked (it holds model_ckpt/)"
        )
    expected = len(splits.base_classes(dataset, 0)) + 1
    for path in found.values():
        _check_authors_file(path, arch, expected)
    return found


def _check_authors_file(path: Path, arch: str, n_outputs: int) -> None:
    ckpt = read_checkpoint(path, mmap=True)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any("layer0." in str(k) for k in state):
        raise DataError(f"{path} holds no reference PSPNet under 'state_dict'; pass the "
                        "authors' RePRI archive as unpacked (model_ckpt/...)")
    try:
        cfg, outputs = infer_reference_config(state)
    except (KeyError, ValueError) as err:
        raise DataError(f"{path} is not a reference PSPNet ({err}); pass the authors' RePRI "
                        "archive as unpacked (model_ckpt/...)") from err
    if cfg.arch != arch:
        raise DataError(f"{path} holds a {cfg.arch} trunk but sits under pspnet_{arch}; the "
                        "file was moved or renamed: unpack the archive again")
    if outputs != n_outputs:
        raise DataError(
            f"{path} has a classifier with {outputs} outputs, but this benchmark's base models "
            f"have {n_outputs} (base classes + background): it was trained on another data set "
            "or split; unpack the authors' archive again or use the dataset it belongs to"
        )
