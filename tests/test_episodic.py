"""Episodic training: the base-class task sampler, the PANet- and PFENet-style peers, and the
episodic mode of the training run (resume, checkpoints, keys)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import MIN_FG_TEST, main_class, make_voc_folder, second_class
from torch.utils.data import DataLoader, TensorDataset

from fsstools import config as config_lib
from fsstools.constants import IGNORE_INDEX
from fsstools.data import splits, voc
from fsstools.data.base_tasks import (
    BaseEpisodeSampler,
    EpisodicTrainDataset,
    FixedEpisodeDataset,
    task_label_map,
)
from fsstools.data.episodes import Episode, EpisodeList
from fsstools.data.transforms import to_tensors
from fsstools.errors import ConfigError, DataError
from fsstools.models import PSPNet, load_model
from fsstools.models.panet import PANet, PANetConfig
from fsstools.models.pfenet import PFENet, PFENetConfig, prior_mask
from fsstools.training import TrainConfig, main, run_key
from fsstools.training.episodic import objective
from fsstools.training.epoch import train_one_epoch
from tests.tiny import TINY_MODEL, TINY_PFENET

NOVEL = set(splits.test_classes("synth", 0))
BASE = splits.base_classes("synth", 0)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    """60 images (24x32): a big block of one class, a small block of another (below
    MIN_FG_TEST), a 255 top row; train and val lists both list all of them."""
    root = make_voc_folder(tmp_path_factory.mktemp("voc"))
    (root / "lists/val.txt").write_text((root / "lists/train.txt").read_text())
    return root


# ----------------------------------------------------------------------------- sampling


def test_task_label_map_ignores_novel_classes():
    lut = task_label_map("synth", 0, 7)
    assert lut[7] == 1 and lut[0] == 0 and lut[6] == 0 and lut[IGNORE_INDEX] == IGNORE_INDEX
    assert all(lut[c] == IGNORE_INDEX for c in NOVEL)
    with pytest.raises(DataError, match="not a base class"):
        task_label_map("synth", 0, 3)


def test_sampler_never_draws_a_novel_class_over_many_draws():
    # Every class held by 4 images; rows 0..3 also hold novel class 1 (index lists it).
    index = {c: [4 * (c - 1) + k for k in range(4)] for c in range(1, 21)}
    index[1] += [40, 41]
    sampler = BaseEpisodeSampler(index, BASE, shots=2)
    torch.manual_seed(0)
    drawn = set()
    for _ in range(2000):
        query, c, supports = sampler.draw()
        drawn.add(c)
        assert c in BASE
        assert query in index[c] and all(s in index[c] for s in supports)
        assert len(set(supports)) == 2 and query not in supports
    assert drawn == set(BASE)  # every base class comes up


def test_sampler_needs_enough_images_per_class():
    with pytest.raises(DataError, match="no base class is held by 4 images"):
        BaseEpisodeSampler({c: [0, 1] for c in BASE}, BASE, shots=3)


def test_training_tasks_have_base_foreground_and_ignored_novel_pixels(voc_root, outputs):
    ds = EpisodicTrainDataset(voc_root, "lists/train.txt", "synth", 0, shots=2,
                              episodes_per_epoch=100, min_fg=MIN_FG_TEST)
    # Without a transform each item keeps its image's pixels: find its raw class-id mask.
    raw = [voc.load_pair(voc_root, img, mask, 20) for img, mask in
           voc.read_pairs(voc_root, "lists/train.txt")]
    by_pixels = {to_tensors(image)["image"].numpy().tobytes(): mask for image, mask in raw}
    novel_ids = torch.tensor(sorted(NOVEL))
    saw_novel_pixels = False
    torch.manual_seed(0)
    for i in range(len(ds)):
        s_imgs, s_masks, q_img, q_mask, c = ds[i]
        c = int(c)
        assert c in BASE
        assert s_imgs.shape == (2, 3, 24, 32) and s_masks.shape == (2, 24, 32)
        for image, mask in zip([*s_imgs, q_img], [*s_masks, q_mask], strict=True):
            m = torch.from_numpy(by_pixels[image.numpy().tobytes()].astype(np.int64))
            novel = torch.isin(m, novel_ids)
            assert (mask[novel] == IGNORE_INDEX).all()  # never foreground, never background
            assert torch.equal(mask == 1, m == c)  # foreground: exactly the task's class
            assert torch.equal(mask == 0, ~novel & (m != c) & (m != IGNORE_INDEX))
            assert (mask[m == IGNORE_INDEX] == IGNORE_INDEX).all()
            saw_novel_pixels |= bool(novel.any())
    assert saw_novel_pixels  # the novel-pixel check was exercised


def test_fixed_episodes_ignore_novel_pixels(voc_root, outputs):
    j = next(j for j in range(60) if main_class(j) in BASE and second_class(j) in NOVEL)
    pair = (f"JPEGImages/img{j:03d}.jpg", f"SegmentationClass/img{j:03d}.png")
    other = next(k for k in range(60) if k != j and main_class(k) == main_class(j))
    support = (f"JPEGImages/img{other:03d}.jpg", f"SegmentationClass/img{other:03d}.png")
    el = EpisodeList(str(voc_root), "lists/val.txt", "synth", 0, "interleaved", 1, 0,
                     (Episode(pair, main_class(j), (support,)),))
    _, s_masks, _, q_mask, c = FixedEpisodeDataset(el)[0]
    raw = torch.from_numpy(voc.load_mask(voc_root / pair[1], 20).astype(np.int64))
    assert int(c) == main_class(j)
    assert (q_mask[raw == second_class(j)] == IGNORE_INDEX).all()
    assert (q_mask[raw == main_class(j)] == 1).all() and (q_mask[raw == 0] == 0).all()
    assert s_masks.shape == (1, 24, 32)


# ----------------------------------------------------------------------------- models


def block_tasks(n_tasks: int, shots: int, size: int = 32, seed: int = 0):
    """Tasks whose foreground is a red block (query and supports at random places) on noise
    with a green distractor block: (support_imgs, support_masks, query_img, query_mask)."""
    g = torch.Generator().manual_seed(seed)
    n = n_tasks * (shots + 1)
    images = 0.3 * torch.randn(n, 3, size, size, generator=g)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    half = size // 2
    for i in range(n):
        y, x = torch.randint(0, size - half, (2,), generator=g).tolist()
        images[i, :, y : y + half, x : x + half] += torch.tensor([2.0, -1.0, -1.0])[:, None, None]
        masks[i, y : y + half, x : x + half] = 1
        images[i, :, :4, :4] += torch.tensor([-1.0, 2.0, -1.0])[:, None, None]
    images = images.unflatten(0, (n_tasks, shots + 1))
    masks = masks.unflatten(0, (n_tasks, shots + 1))
    return images[:, :shots], masks[:, :shots], images[:, shots], masks[:, shots]


def fit_losses(model, tasks, steps: int = 12, lr: float = 0.01) -> list[float]:
    """Train ``model`` with the episodic objective over one fixed batch; the loss per step."""
    loader = DataLoader(TensorDataset(*tasks, torch.zeros(len(tasks[0]))), batch_size=len(tasks[0]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return [train_one_epoch(model, loader, opt, sched, scaler, 0.0, torch.device("cpu"),
                            objective=objective(0.0))["loss"] for _ in range(steps)]


def pfenet_tasks(model: PFENet, tasks):
    """The tasks with images replaced by frozen-trunk features and support masks at the grid."""
    s_imgs, s_masks, q_img, q_mask = tasks
    b, s = s_imgs.shape[:2]
    feats = model.extract_features(torch.cat([s_imgs.flatten(0, 1), q_img]))  # (B*S + B, C, h, w)
    grid = feats.shape[-2:]
    small = torch.nn.functional.interpolate(s_masks.flatten(0, 1)[:, None].float(), size=grid,
                                            mode="nearest")[:, 0].long()  # (B*S, h, w)
    return feats[: b * s].unflatten(0, (b, s)), small.unflatten(0, (b, s)), feats[b * s:], q_mask


def test_panet_steps_reduce_the_loss():
    torch.manual_seed(0)
    losses = fit_losses(PANet(TINY_MODEL), block_tasks(4, 1))
    assert losses[-1] < 0.7 * losses[0]


def test_pfenet_steps_reduce_the_loss_and_leave_the_trunk_untouched():
    torch.manual_seed(0)
    # Without dropout the decrease is the optimiser's, not the luck of the dropout draws.
    model = PFENet(TINY_MODEL, PFENetConfig(reduce_dim=8, bins=(4, 2), dropout=0.0,
                                            cls_dropout=0.0))
    trunk = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    tasks = pfenet_tasks(model, block_tasks(4, 1))
    assert not any(t.requires_grad for t in tasks)  # the trunk's features carry no graph
    losses = fit_losses(model, tasks, steps=30)
    assert losses[-1] < 0.75 * losses[0]
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in trunk.items())
    assert not model.backbone.training  # BN statistics of the trunk stay fixed


def test_pfenet_prior_is_training_free_and_normalised():
    model = PFENet(TINY_MODEL, TINY_PFENET).train()
    s_feats, s_masks, q_feats, q_mask = pfenet_tasks(model, block_tasks(2, 3))
    out = model(s_feats, s_masks, q_feats, q_mask)
    assert out["loss"].requires_grad and not out["prior"].requires_grad
    assert out["prior"].grad_fn is None
    prior = out["prior"]  # (B, 1, h, w)
    assert prior.shape == (2, 1, *q_feats.shape[-2:])
    assert float(prior.min()) >= 0.0 and float(prior.max()) <= 1.0 + 1e-6
    # One shot whose support is the query itself: its foreground pixels score exactly 1.
    q_high = torch.randn(1, 6, 4, 4)
    fg = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    fg[..., :2, :2] = True
    p = prior_mask(q_high, q_high[:, None], fg)[0, 0]
    assert torch.allclose(p[:2, :2], torch.ones(2, 2)) and float(p.min()) == 0.0


def test_panet_alignment_term_gives_a_nonzero_gradient():
    torch.manual_seed(0)
    model = PANet(TINY_MODEL).train()
    s_imgs, s_masks, q_img, q_mask = block_tasks(2, 1)
    feats = torch.nn.functional.normalize(
        model.extract_features(torch.cat([s_imgs.flatten(0, 1), q_img])), dim=1)
    s_feats, q_feats = feats[:2, None], feats[2:]
    grid = feats.shape[-2:]
    logits = torch.zeros(2, 2, *grid)
    logits[:, 1, : grid[0] // 2] = 1.0  # a prediction with both foreground and background
    align = model.alignment_loss(logits, q_feats, torch.zeros(2, *grid, dtype=torch.long),
                                 s_feats, s_masks)
    align.backward()
    grads = [p.grad.abs().sum() for p in model.parameters() if p.grad is not None]
    assert align.item() > 0 and grads and float(sum(grads)) > 0
    # In the full objective, align_weight changes the gradient the encoder gets.
    def grad_with(weight: float) -> torch.Tensor:
        torch.manual_seed(0)
        m = PANet(TINY_MODEL, PANetConfig(align_weight=weight)).eval()  # no dropout noise
        out = m(s_imgs, s_masks, q_img, q_mask)
        out["loss"].backward()
        return m.backbone.conv1.weight.grad.clone(), out["align_loss"]
    g0, _ = grad_with(0.0)
    g1, align1 = grad_with(1.0)
    assert align1 > 0  # this initialisation predicts both classes, so PAR is active
    assert not torch.allclose(g0, g1)


@pytest.mark.parametrize("shots", [1, 5])
def test_forward_shapes(shots):
    torch.manual_seed(0)
    s_imgs, s_masks, q_img, q_mask = block_tasks(2, shots)
    panet = PANet(TINY_MODEL).eval()
    out = panet(s_imgs, s_masks, q_img)
    assert out["logits"].shape == (2, 2, 4, 4) and "loss" not in out
    assert panet.train()(s_imgs, s_masks, q_img, q_mask)["loss"].shape == ()
    pfenet = PFENet(TINY_MODEL, TINY_PFENET)
    s_feats, s_small, q_feats, _ = pfenet_tasks(pfenet, (s_imgs, s_masks, q_img, q_mask))
    assert s_feats.shape == (2, shots, pfenet.feature_dim, 4, 4)
    out = pfenet.eval()(s_feats, s_small, q_feats)
    assert out["logits"].shape == (2, 2, 4, 4) and out["prior"].shape == (2, 1, 4, 4)
    assert pfenet.train()(s_feats, s_small, q_feats, q_mask)["loss"].shape == ()


def test_panet_starts_from_the_base_models_initialisation():
    torch.manual_seed(3)
    base = PSPNet(TINY_MODEL, n_classes=16)
    torch.manual_seed(3)
    panet = PANet(TINY_MODEL)
    own = panet.state_dict()
    assert own.keys() == {k for k in base.state_dict() if not k.startswith("classifier.")}
    assert all(torch.equal(v, own[k]) for k, v in base.state_dict().items() if k in own)


# ----------------------------------------------------------------------------- the run


RUN = ["model.arch=small", "model.widths=[4,8,8,8]", "model.stem_width=4",
       "model.bottleneck_dim=8", "model.bins=[1,2]", "run.workers=0", "run.progress=false",
       "run.threads=1", "optim.batch_size=4", "optim.name=adamw", "optim.lr=0.01",
       "optim.label_smoothing=0", "run.val_batch_size=8", "run.amp=fp32", "data.dataset=synth",
       "data.crop_size=32", "data.val_size=32", f"data.min_fg={MIN_FG_TEST}", "run.epochs=2"]
EPISODIC = ["mode=episodic", "episodic.episodes_per_epoch=8", "episodic.val_episodes=12",
            "episodic.pfenet.reduce_dim=8", "episodic.pfenet.bins=[4,2]"]


def run_cfg(root: Path, out: Path, *extra: str) -> TrainConfig:
    return config_lib.load(TrainConfig, None, [*RUN, f"data.root={root}", f"run.out_dir={out}",
                                               *extra])


@pytest.fixture(scope="module")
def trunk(voc_root, tmp_path_factory):
    """A base checkpoint of synth fold 0 (one tiny epoch), and one of fold 1."""
    out = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FSSTOOLS_OUTPUTS", str(out / "outputs"))
        fold0 = main(run_cfg(voc_root, out, "run.epochs=1", "run.name=base0"))
        fold1 = main(run_cfg(voc_root, out, "run.epochs=1", "run.name=base1", "data.fold=1"))
    return fold0 / "best.pt", fold1 / "best.pt"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("peer", ["panet", "pfenet"])
def test_episodic_resume_after_kill_matches_uninterrupted_run(voc_root, trunk, tmp_path, outputs,
                                                             peer):
    extra = [*EPISODIC, f"episodic.model={peer}", f"episodic.trunk={trunk[0]}"]
    full = main(run_cfg(voc_root, tmp_path / "a", *extra))
    killed = main(run_cfg(voc_root, tmp_path / "b", *extra, "run.stop_after_epoch=1"))
    assert not (killed / "done").exists()
    resumed = main(run_cfg(voc_root, tmp_path / "b", *extra, "run.resume=true"))
    assert resumed == killed and (resumed / "done").exists()
    for name in ("last.pt", "best.pt"):
        a, b = weights(full / name), weights(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows = (full / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:5] for r in rows] == [
        r.split(",")[:5] for r in (resumed / "metrics.csv").read_text().splitlines()]
    scores = [float(r.split(",")[2]) for r in rows[1:]]
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)

    # The checkpoint loads back as the peer, with features for the feature cache.
    model = load_model(full / "best.pt")
    assert type(model) is (PANet if peer == "panet" else PFENet) and not model.training
    assert all(torch.equal(v, weights(full / "best.pt")[k]) for k, v in model.state_dict().items())
    feats = model.extract_features(torch.zeros(2, 3, 32, 32))
    assert feats.shape == (2, model.feature_dim, 4, 4)
    if peer == "pfenet":  # the frozen trunk is the base model's, unchanged
        base = weights(trunk[0])
        assert all(torch.equal(v, base[f"backbone.{k}"])
                   for k, v in model.backbone.state_dict().items())


def test_pfenet_needs_the_folds_own_trunk(voc_root, trunk, tmp_path, outputs):
    with pytest.raises(ConfigError, match="episodic.trunk is not set"):
        main(run_cfg(voc_root, tmp_path, *EPISODIC, "episodic.model=pfenet"))
    with pytest.raises(ConfigError, match="has seen novel"):
        main(run_cfg(voc_root, tmp_path, *EPISODIC, "episodic.model=pfenet",
                     f"episodic.trunk={trunk[1]}"))
    assert not any(tmp_path.glob("pspnet-*"))  # failed before a checkpoint: no folder left


def test_run_keys_separate_the_modes(voc_root, trunk, tmp_path):
    base = run_cfg(voc_root, tmp_path)
    assert run_key(base, "d") == run_key(run_cfg(voc_root, tmp_path, "episodic.shots=5"), "d")
    panet = run_cfg(voc_root, tmp_path, *EPISODIC)
    assert run_key(panet, "d") != run_key(base, "d")
    assert run_key(panet, "d") != run_key(run_cfg(voc_root, tmp_path, *EPISODIC,
                                                  "episodic.shots=2"), "d")
    pfenet = [*EPISODIC, "episodic.model=pfenet"]
    k0 = run_key(run_cfg(voc_root, tmp_path, *pfenet, f"episodic.trunk={trunk[0]}"), "d")
    k1 = run_key(run_cfg(voc_root, tmp_path, *pfenet, f"episodic.trunk={trunk[1]}"), "d")
    assert k0 != k1  # another trunk (its bytes) is another run


@pytest.mark.slow
def test_episodic_two_process_gloo_ddp_ranks_agree(voc_root, tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys

    config = tmp_path / "panet.yaml"
    config.write_text("run:\n  name: ddp\n")
    sets = [*RUN, *EPISODIC, f"data.root={voc_root}", f"run.out_dir={tmp_path}", "run.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FSSTOOLS_OUTPUTS": str(tmp_path / "outputs")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "fsstools.cli", "train", "--config", str(config), "--set", *sets]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, stderr[-3000:]
    (run_dir,) = tmp_path.glob("ddp-*")
    done = json.loads((run_dir / "done").read_text())
    assert len(done["param_digests"]) == 2 and len(set(done["param_digests"])) == 1
    assert type(load_model(run_dir / "best.pt")) is PANet


@pytest.mark.slow
def test_episodic_resume_is_exact_with_augmentation_in_workers(voc_root, tmp_path, outputs):
    """Workers draw the tasks and the crops; their seeds follow the epoch, not the process."""
    extra = [*EPISODIC, "run.workers=2"]
    full = main(run_cfg(voc_root, tmp_path / "a", *extra))
    main(run_cfg(voc_root, tmp_path / "b", *extra, "run.stop_after_epoch=1"))
    resumed = main(run_cfg(voc_root, tmp_path / "b", *extra, "run.resume=true"))
    a, b = weights(full / "last.pt"), weights(resumed / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
