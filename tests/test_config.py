from dataclasses import dataclass, field

import pytest

from fsstools import config
from fsstools.artifacts import atomic_write, atomic_write_text, file_hash
from fsstools.config import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    bins: tuple[int, ...] = (1, 2, 3, 6)


@dataclass(frozen=True)
class Outer:
    name: str = "run"
    inner: Inner = field(default_factory=Inner)
    path: str | None = None


def test_defaults_then_yaml_then_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\ninner:\n  lr: 0.5\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\ninner:\n  bins: [1, 2]\n")
    cfg = config.load(Outer, tmp_path / "exp.yaml", ["inner.lr=0.25", "path=/x"])
    assert cfg == Outer(name="base", inner=Inner(lr=0.25, bins=(1, 2)), path="/x")


def test_unknown_key_is_rejected_with_its_dotted_name(tmp_path):
    (tmp_path / "bad.yaml").write_text("inner:\n  lrr: 0.5\n")
    with pytest.raises(ConfigError, match=r"inner\.lrr.*bad\.yaml"):
        config.load(Outer, tmp_path / "bad.yaml")


def test_wrong_type_and_missing_file_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="name"):
        config.load(Outer, None, ["name=3"])
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(Outer, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        config.load(Outer, None, ["inner.lr"])


def test_yaml_round_trip_and_hash(tmp_path):
    cfg = Outer(inner=Inner(lr=0.3))
    path = config.save_yaml(cfg, tmp_path / "cfg.yaml")
    assert config.load(Outer, path) == cfg
    assert config.config_hash(cfg) == config.config_hash(Outer(inner=Inner(lr=0.3)))
    assert config.config_hash(cfg) != config.config_hash(Outer())


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "first")

    def boom(p):
        p.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    assert len(file_hash(target)) == 12
