import json

import numpy as np
import pytest
import torch

from fsstools import cli
from fsstools.constants import IGNORE_INDEX
from fsstools.data import episodes as E
from fsstools.data import splits, voc
from fsstools.errors import ConfigError, DataError, MissingError
from tests.fixtures import MIN_FG_TEST, default_masks, list_path, main_class, make_voc_folder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # 60 images: each class is the main class (>= MIN_FG_TEST px) of exactly 3 images
    return make_voc_folder(tmp_path_factory.mktemp("voc"))


def sample(root, **kwargs):
    args = dict(dataset="synth", fold=0, shots=2, n_episodes=50, seed=0, min_fg=MIN_FG_TEST)
    force = kwargs.pop("force", False)
    return E.sample_episodes(root, list_path(), E.EpisodeSettings(**{**args, **kwargs}), force)


def test_same_seed_same_episodes_other_seed_differs(root):
    a, b, c = sample(root), sample(root), sample(root, seed=1)
    assert a == b and a.hash == b.hash
    assert a.episodes != c.episodes and a.hash != c.hash


def test_episode_structure(root):
    el = sample(root)
    pairs = voc.read_pairs(root, list_path())
    index = voc.class_index(root, pairs, 20, MIN_FG_TEST)
    holds = {c: {pairs[i] for i in index[c]} for c in index}
    assert len(el) == 50 and el.classes == (1, 2, 3, 4, 5)
    for ep in el.episodes:
        assert ep.class_id in splits.test_classes("synth", 0)
        assert ep.query in holds[ep.class_id]
        assert len(ep.supports) == 2 and len(set(ep.supports)) == 2
        assert ep.query not in ep.supports
        assert all(s in holds[ep.class_id] for s in ep.supports)


def test_duplicate_list_lines_never_pair_query_with_itself(root, tmp_path):
    lines = (root / list_path()).read_text().splitlines()[:20]
    (root / "lists/dup.txt").write_text("\n".join(lines + lines) + "\n")
    # each class now has one image listed twice: 1 shot needs the other copy, which is the query
    with pytest.raises(ValueError, match=r"class 1 \(ellipse-stripes\) is held by 1 image"):
        E.sample_episodes(root, "lists/dup.txt", E.EpisodeSettings("synth", 0, 1, 5, 0,
                                                                   min_fg=MIN_FG_TEST))


def test_save_load_roundtrip_and_hash_check(root, tmp_path):
    el = sample(root, random_shots=(1, 2))
    path = E.save_episodes(el, tmp_path / "eps.json")
    again = E.load_episodes(path)
    assert again == el
    assert E.load_episodes(path, root=tmp_path).root == str(tmp_path)

    data = json.loads(path.read_text())
    data["episodes"][0]["class_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"eps\.json does not match its hash.*--accept-edited"):
        E.load_episodes(path)


def test_an_edited_file_is_accepted_on_request_under_its_new_hash(root, tmp_path):
    el = sample(root)
    path = E.save_episodes(el, tmp_path / "eps.json")
    data = json.loads(path.read_text())
    data["episodes"][0]["supports"] = data["episodes"][1]["supports"]  # hand-picked supports
    data["episodes"][0]["class_id"] = data["episodes"][1]["class_id"]
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=rf"was edited \(stored hash {el.hash}, now \w+\)"):
        edited = E.load_episodes(path, accept_edited=True)
    assert edited.hash != el.hash and edited.hash == E.episode_hash(edited)
    assert edited.episodes[0].supports == el.episodes[1].supports


@pytest.mark.filterwarnings("ignore:episode file .* was edited")
@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["episodes"][0].update(class_id=99), "episode 0: class 99 is not a synth class"),
    (lambda d: d["episodes"][2]["supports"].pop(), "episode 2: it has 1 support.*says 2"),
    (lambda d: d["episodes"][3].update(supports=[d["episodes"][3]["query"]] * 2),
     "episode 3: its query .* is also one of its supports"),
    (lambda d: d.update(dataset="pascall"), "unknown dataset 'pascall'"),
    (lambda d: d.update(episodes=[]), "holds no episodes"),
    (lambda d: d.pop("seed"), "not a valid episode list"),
])
def test_an_edited_file_that_cannot_be_scored_is_refused(root, tmp_path, change, message):
    path = E.save_episodes(sample(root), tmp_path / "eps.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        E.load_episodes(path, accept_edited=True)


def test_episode_files_of_one_study_must_fit_together(root, tmp_path):
    one = E.save_episodes(sample(root, shots=1), tmp_path / "one.json")
    two = E.save_episodes(sample(root, shots=2), tmp_path / "two.json")
    lists = E.load_episode_files([one, two], "synth", 0)
    assert sorted(lists) == [(1, 0), (2, 0)] and lists[2, 0] == sample(root, shots=2)
    assert E.load_episode_files([two]) == {(2, 0): lists[2, 0]}  # dataset, fold of the file
    with pytest.raises(ConfigError, match=r"synth fold 0 episodes .* evaluates synth fold 1.*"
                                          r"--set fold=0"):
        E.load_episode_files([one], "synth", 1)
    with pytest.raises(ConfigError, match="both hold 1-shot episodes of seed 0"):
        E.load_episode_files([one, one], "synth", 0)
    rand = E.save_episodes(sample(root, random_shots=(1, 2)), tmp_path / "rand.json")
    with pytest.raises(ConfigError, match=r"shots in 1\.\.2.*--shots K"):
        E.load_episode_files([rand], "synth", 0)
    with pytest.raises(MissingError, match="ghost.json not found.*fsstools episodes"):
        E.load_episode_files([tmp_path / "ghost.json"], "synth", 0)
    moved = json.loads(one.read_text())
    moved["root"] = str(tmp_path / "moved")  # not covered by the hash
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    with pytest.raises(MissingError, match=r"under .*moved, which does not exist.*\"root\""):
        E.load_episode_files([tmp_path / "moved.json"], "synth", 0)


def test_random_shots_range(root):
    el = sample(root, random_shots=(1, 2), n_episodes=40)
    assert {len(ep.supports) for ep in el.episodes} == {1, 2}
    assert el.shots == 2 and el.random_shots == (1, 2)


def test_too_few_images_named_or_skipped(tmp_path):
    masks = default_masks(40)  # each class main in 2 images: 1 shot ok, 2 shots not
    del masks["img002"]  # class 3 in one image only
    small = make_voc_folder(tmp_path, masks)
    with pytest.raises(DataError, match=r"class 3 \(triangle-dots\) is held by 1 image.*"
                                        r"--skip-small.*--set skip_small=true"):
        sample(small, shots=1)
    with pytest.warns(UserWarning, match="class 3"):
        el = sample(small, shots=1, skip_small=True)
    assert el.classes == (1, 2, 4, 5) and el.skipped == {3: 1}
    assert all(ep.class_id != 3 for ep in el.episodes)


def test_classes_override(root):
    el = sample(root, dataset="pascal", classes=splits.coco_to_pascal_classes(1))
    assert {ep.class_id for ep in el.episodes} <= {2, 6, 13, 18}
    assert all(main_class(int(ep.query[0][-7:-4])) == ep.class_id for ep in el.episodes)


def test_episode_mask_numpy_and_torch():
    full = np.array([[0, 3, 7], [255, 3, 1]], np.uint8)
    expected = [[0, 1, 0], [IGNORE_INDEX, 1, 0]]
    assert E.episode_mask(full, 3).tolist() == expected
    assert E.episode_mask(full, 3).dtype == np.int64
    out = E.episode_mask(torch.from_numpy(full), 3)
    assert out.dtype == torch.int64 and out.tolist() == expected
    batch = torch.from_numpy(np.stack([full, full]))
    out = E.episode_mask(batch, torch.tensor([3, 7]))  # (B, H, W) with one class per task
    assert out[1].tolist() == [[0, 0, 1], [IGNORE_INDEX, 0, 0]]


def test_cli_writes_loadable_file(root, tmp_path, capsys):
    out = tmp_path / "cli.json"
    argv = f"--root {root} --list {list_path()} --dataset synth --fold 0 --shots 2 --n 50"
    argv += f" --seed 0 --min-fg {MIN_FG_TEST} --out {out}"
    assert cli.main(["episodes", *argv.split()]) == 0
    assert E.load_episodes(out) == sample(root)
    assert "50 episodes" in capsys.readouterr().out
