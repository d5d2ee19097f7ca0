import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from fsstools import cli
from fsstools import config as config_lib
from fsstools import progress as progress_lib
from fsstools.models import PSPNet, load_model
from fsstools.training import (
    TrainConfig,
    TrainData,
    ensure_trained,
    main,
    run_directory,
    run_key,
    train_one_epoch,
    validate,
)
from fsstools.training.epoch import confusion_matrix, cosine_lambda, iou_from_confusion

TINY_MODEL = ["model.arch=small", "model.widths=[4,8,8,8]", "model.stem_width=4",
              "model.bottleneck_dim=8", "model.bins=[1,2]"]
TINY_RUN = ["run.workers=0", "run.progress=false", "run.threads=1", "optim.batch_size=4",
            "optim.lr=0.05", "run.val_batch_size=8", "run.amp=fp32"]


def load_config(path, overrides=()):
    return config_lib.load(TrainConfig, path, list(overrides))


def tiny_cfg(out_dir, *extra):
    return load_config(None, [*TINY_MODEL, *TINY_RUN, f"run.out_dir={out_dir}", *extra])


@pytest.fixture(scope="module")
def tiny_data():
    """Eight 24x24 images of 8x8 blocks, each block coloured by its label 0, 1 or 2."""
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 3, (8, 3, 3), generator=g)
    masks = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)  # (8, 24, 24)
    colours = torch.tensor([[-1.0, -1.0, -1.0], [1.0, -1.0, 0.0], [-1.0, 1.0, 1.0]])
    images = colours[masks].permute(0, 3, 1, 2) + 0.3 * torch.randn(8, 3, 24, 24, generator=g)
    masks[:, :2] = 255
    ds = TensorDataset(images, masks)
    return TrainData(ds, ds, (6, 7), fingerprint="tiny-tensors")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_confusion_matrix_and_iou():
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    conf = confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    iou = iou_from_confusion(conf)
    assert iou["class_iou"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert iou["miou"] == pytest.approx(1 / 3) and iou["miou_fg"] == pytest.approx(1 / 3)


def test_cosine_schedule_with_warmup():
    f = cosine_lambda(total_iters=10, warmup_iters=2)
    assert [f(0), f(1), f(2)] == pytest.approx([0.5, 1.0, 1.0])
    assert f(7) == pytest.approx(0.5 * (1 + np.cos(np.pi * 5 / 8)))
    assert f(10) == pytest.approx(0.0, abs=1e-12)


def test_run_key_ignores_run_control_only_and_follows_the_data(tmp_path):
    cfg = tiny_cfg(tmp_path)
    same = tiny_cfg(tmp_path / "elsewhere", "run.workers=3", "run.device=cpu", "run.resume=true",
                    "run.stop_after_epoch=1")
    assert run_key(cfg, "d") == run_key(same, "d")
    assert run_key(cfg, "d") != run_key(tiny_cfg(tmp_path, "optim.lr=0.01"), "d")
    assert run_key(cfg, "d") != run_key(cfg, "other data")
    assert run_directory(cfg, "d").name == f"pspnet-{run_key(cfg, 'd')}"
    # a relative data root means the same folder as its absolute path
    rel = tiny_cfg(tmp_path, "data.root=data/pascal")
    absolute = tiny_cfg(tmp_path, f"data.root={Path('data/pascal').resolve()}")
    assert run_key(rel, "d") == run_key(absolute, "d")


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("dataset", ["synth", "pascal", "coco"])
def test_fold_configs_load_and_differ_only_in_fold(dataset):
    cfgs = [load_config(CONFIGS / dataset / f"fold{i}.yaml") for i in range(4)]
    assert [c.data.fold for c in cfgs] == [0, 1, 2, 3]
    assert len({run_key(c, "d") for c in cfgs}) == 4
    assert all(c.data.dataset == dataset for c in cfgs)
    if dataset != "synth":  # the reference recipe (SPEC section 5)
        c = cfgs[0]
        assert (c.model.arch, c.data.crop_size, c.optim.batch_size, c.optim.lr) == (
            "resnet50", 417, 12, 0.0025)  # fmt: skip
        assert c.run.epochs == (100 if dataset == "pascal" else 20)


def test_training_steps_reduce_the_loss(tiny_data):
    torch.manual_seed(0)
    cfg = tiny_cfg("unused")
    model = PSPNet(cfg.model, n_classes=3)
    loader = torch.utils.data.DataLoader(tiny_data.train, batch_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    losses = [train_one_epoch(model, loader, opt, sched, scaler, 0.1, torch.device("cpu"))["loss"]
              for _ in range(8)]
    assert losses[-1] < 0.9 * losses[0]
    val = validate(model, loader, 3, torch.device("cpu"))
    assert 0.0 <= val["miou_fg"] <= 1.0 and len(val["class_iou"]) == 3


class _CountingLoader(torch.utils.data.DataLoader):
    """A DataLoader that counts how often an iterator (a set of workers) is started."""

    started = 0

    def __iter__(self):
        type(self).started += 1
        return super().__iter__()


@pytest.mark.parametrize("progress", [False, True])
def test_one_epoch_starts_the_loader_once(tiny_data, progress):
    # tqdm.auto calls iter() on what it wraps: given the loader itself, every epoch would
    # fork a second, never-read set of workers (and their garbage copy later raised
    # "can only test a child process" inside a worker).
    cfg = tiny_cfg("unused")
    model = PSPNet(cfg.model, n_classes=3)
    loader = _CountingLoader(tiny_data.train, batch_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    _CountingLoader.started = 0
    bar = progress_lib.bar(total=len(loader)) if progress else None
    stats = train_one_epoch(model, loader, opt, sched, scaler, 0.1, torch.device("cpu"), bar=bar)
    if bar is not None:
        assert bar.n == len(loader)  # one step per batch
    assert _CountingLoader.started == 1
    assert stats["images"] == len(tiny_data.train)


def test_run_writes_checkpoints_metrics_and_config(tmp_path, tiny_data):
    run_dir = main(tiny_cfg(tmp_path, "run.epochs=2"), tiny_data)
    assert {"best.pt", "last.pt", "metrics.csv", "config.yaml", "done"} <= {
        p.name for p in run_dir.iterdir()}  # fmt: skip
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["epoch", "train_loss", "val_miou", "val_miou_fg", "lr",
                                  "time_s", "images_per_s"]
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    model = load_model(run_dir / "best.pt")
    assert model.n_classes == 3 and not model.training
    assert load_config(run_dir / "config.yaml") == tiny_cfg(tmp_path, "run.epochs=2")
    best = json.loads((run_dir / "done").read_text())
    scores = [float(r.split(",")[2]) for r in rows[1:]]
    assert best["score"] == pytest.approx(max(scores), rel=1e-5)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, tiny_data):
    full = main(tiny_cfg(tmp_path / "a", "run.epochs=3"), tiny_data)
    killed = main(tiny_cfg(tmp_path / "b", "run.epochs=3", "run.stop_after_epoch=1"), tiny_data)
    assert not (killed / "done").exists()
    with pytest.raises(RuntimeError, match="--resume"):
        main(tiny_cfg(tmp_path / "b", "run.epochs=3"), tiny_data)
    resumed = main(tiny_cfg(tmp_path / "b", "run.epochs=3", "run.resume=true"), tiny_data)
    assert resumed == killed and (resumed / "done").exists()
    assert_same_weights(weights(full / "last.pt"), weights(resumed / "last.pt"))
    assert_same_weights(weights(full / "best.pt"), weights(resumed / "best.pt"))

    def numbers(run_dir):  # epoch, loss, mIoU (incl./excl. background), lr; not timings
        return [r.split(",")[:5] for r in (run_dir / "metrics.csv").read_text().splitlines()]

    assert numbers(full) == numbers(resumed)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, tiny_data):
    a = main(tiny_cfg(tmp_path / "a", "run.epochs=1"), tiny_data)
    b = main(tiny_cfg(tmp_path / "b", "run.epochs=1"), tiny_data)
    c = main(tiny_cfg(tmp_path / "c", "run.epochs=1", "run.seed=1"), tiny_data)
    assert_same_weights(weights(a / "last.pt"), weights(b / "last.pt"))
    wa, wc = weights(a / "last.pt"), weights(c / "last.pt")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_ensure_trained_reuses_a_finished_run(tmp_path, tiny_data):
    cfg = tiny_cfg(tmp_path, "run.epochs=1")
    best = ensure_trained(cfg, tiny_data)
    stamp = best.stat().st_mtime_ns
    assert ensure_trained(cfg, tiny_data) == best  # finished: nothing retrained
    assert best.stat().st_mtime_ns == stamp
    other = TrainData(tiny_data.train, tiny_data.val, tiny_data.classes, "other data")
    assert ensure_trained(cfg, other) != best  # other data: another run


def test_failed_run_leaves_no_folder_and_no_lock_inside(tmp_path, tiny_data):
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            raise OSError("disk gone")

    broken = TrainData(Broken(), Broken(), (6, 7), "broken")
    cfg = tiny_cfg(tmp_path / "runs", "run.epochs=1")
    with pytest.raises(OSError, match="disk gone"):
        main(cfg, broken)
    assert not run_directory(cfg, "broken").exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    run_dir = main(cfg, tiny_data)  # a working run keeps no lock beside its files
    assert not list(run_dir.glob("*lock*"))


def test_concurrent_requests_for_one_run_train_it_once(tmp_path, tiny_data):
    from concurrent.futures import ThreadPoolExecutor

    cfg = tiny_cfg(tmp_path, "run.epochs=2")
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: ensure_trained(cfg, tiny_data), range(2)))
    assert paths[0] == paths[1]
    assert len((paths[0].parent / "metrics.csv").read_text().splitlines()) == 1 + 2


# ----------------------------------------------------------------------------- on-disk data


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    """Twelve 32x32 images in VOC layout: base classes 6 and 7 of synth fold 0, novel 1."""
    root = tmp_path_factory.mktemp("voc")
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClass").mkdir()
    (root / "lists").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(12):
        mask = np.zeros((32, 32), np.uint8)
        mask[4:20, 4:20] = 6 + i % 2
        mask[22:30, 22:30] = 1
        image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        image[mask == 6] = (200, 30, 30)
        image[mask == 7] = (30, 200, 30)
        Image.fromarray(image).save(root / f"JPEGImages/{i}.jpg")
        Image.fromarray(mask).save(root / f"SegmentationClass/{i}.png")
        lines.append(f"JPEGImages/{i}.jpg SegmentationClass/{i}.png")
    (root / "lists/train.txt").write_text("\n".join(lines) + "\n")
    (root / "lists/val.txt").write_text("\n".join(lines[:4]) + "\n")
    return root


def disk_overrides(root, out_dir):
    return [*TINY_MODEL, *TINY_RUN, "data.dataset=synth", f"data.root={root}",
            "data.crop_size=32", "data.val_size=32", "data.min_fg=16", "run.epochs=1",
            f"run.out_dir={out_dir}"]


def test_cli_trains_from_a_yaml_config(tmp_path, voc_root, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("run:\n  name: tiny\n")
    args = ["train", "--config", str(config), "--set", *disk_overrides(voc_root, tmp_path)]
    assert cli.main(args) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert run_dir.name.startswith("tiny-") and (run_dir / "done").exists()
    assert load_model(run_dir / "best.pt").n_classes == 16  # 15 base classes + background


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_two_process_ddp_ranks_agree(tmp_path, voc_root, device):
    """Two ranks under torchrun (gloo on the CPU, nccl on two GPUs) end with equal weights."""
    if device == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip(f"nccl DDP needs 2 CUDA devices, found {torch.cuda.device_count()}")
    config = tmp_path / "tiny.yaml"
    config.write_text("run:\n  name: ddp\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "fsstools.cli", "train", "--config", str(config),
           "--set", *disk_overrides(voc_root, tmp_path), f"run.device={device}"]
    # Own process group, so a hang kills torchrun's ranks too rather than leaving orphans.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, stderr[-3000:]
    (run_dir,) = (tmp_path).glob("ddp-*")
    done = json.loads((run_dir / "done").read_text())
    assert len(done["param_digests"]) == 2
    assert done["param_digests"][0] == done["param_digests"][1]
    assert load_model(run_dir / "best.pt").n_classes == 16


@pytest.mark.slow
def test_resume_is_exact_with_random_augmentation_and_workers(tmp_path, voc_root):
    """Workers draw the random crops; their seeds must follow the epoch, not the process."""
    common = [*disk_overrides(voc_root, tmp_path), "run.epochs=2", "run.workers=2"]
    full = main(load_config(None, [*common, f"run.out_dir={tmp_path / 'a'}"]))
    main(load_config(None, [*common, f"run.out_dir={tmp_path / 'b'}", "run.stop_after_epoch=1"]))
    resumed = main(load_config(None, [*common, f"run.out_dir={tmp_path / 'b'}", "run.resume=true"]))
    assert_same_weights(weights(full / "last.pt"), weights(resumed / "last.pt"))


def test_precision_on_cpu_follows_run_amp():
    from fsstools.errors import ConfigError
    from fsstools.training.epoch import Precision

    cpu = torch.device("cpu")
    assert Precision.choose("fp32", cpu).dtype is None
    assert Precision.choose("bf16", cpu).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        Precision.choose("fp16", cpu)
    model = PSPNet(tiny_cfg("unused").model, n_classes=3).eval()
    with Precision.choose("bf16", cpu).autocast(cpu):
        out = model(torch.randn(1, 3, 24, 24))
    assert out.dtype == torch.bfloat16


class _Draws(torch.utils.data.Dataset):
    """Items made of one draw from each random stream a transform may read."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        import random
        return torch.tensor([float(i), torch.rand(()).item(), random.random(), np.random.rand()])


def test_in_process_loading_draws_what_one_worker_draws_and_leaves_the_process_streams():
    from fsstools.training.runtime import InProcessLoader, seed_worker

    def batches(workers):
        g = torch.Generator().manual_seed(3)
        plain = torch.utils.data.DataLoader(
            _Draws(), batch_size=4, sampler=torch.utils.data.RandomSampler(_Draws(), generator=g),
            num_workers=workers, worker_init_fn=seed_worker, generator=g)
        loader = plain if workers else InProcessLoader(plain)
        return [b for _ in range(2) for b in loader]  # two epochs

    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    in_process = batches(0)
    assert torch.equal(torch.rand(3), expected_next)  # the training process's stream untouched
    one_worker = batches(1)
    assert len(in_process) == 6
    for a, b in zip(in_process, one_worker, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(in_process[0], in_process[3])  # each epoch draws anew


def test_workers_0_and_1_train_the_same_weights(tmp_path, voc_root):
    common = [*disk_overrides(voc_root, tmp_path), "run.epochs=1"]
    a = main(load_config(None, [*common, "run.workers=0", f"run.out_dir={tmp_path / 'a'}"]))
    b = main(load_config(None, [*common, "run.workers=1", f"run.out_dir={tmp_path / 'b'}"]))
    assert_same_weights(weights(a / "last.pt"), weights(b / "last.pt"))


def test_loader_bench_checks_the_batches_and_prints_its_speedup(tmp_path, voc_root, capsys):
    from bench import loader as loader_bench

    overrides = [o for o in disk_overrides(voc_root, tmp_path) if not o.startswith("run.out")]
    assert loader_bench.main(["--steps", "1", "--rounds", "1", "--set", *overrides]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "same batches from both variants (first 5): True" in out
    assert out[-1].startswith("speedup=") and float(out[-1].partition("=")[2]) > 0
