from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from fsstools import config
from fsstools.cache import atomic_write, atomic_write_text, file_hash
from fsstools.config import ConfigError
from fsstools.errors import MissingError


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    bins: tuple[int, ...] = (1, 2, 3, 6)


@dataclass(frozen=True)
class Outer:
    name: str = "run"
    inner: Inner = field(default_factory=Inner)
    path: str | None = None
    mode: Literal["fast", "exact"] = "fast"
    steps: int | None = None
    flag: bool = False
    items: tuple[str | dict[str, Any], ...] = ("a",)

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps={self.steps}: use a number >= 0")


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
    with pytest.raises(ConfigError, match="name must be a string, got 3"):
        config.load(Outer, None, ["name=3"])
    with pytest.raises(MissingError, match="nope.yaml does not exist"):
        config.load(Outer, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        config.load(Outer, None, ["inner.lr"])


def test_values_are_coerced_to_their_declared_types(tmp_path):
    # PyYAML reads 1e-3 as a string (YAML 1.1 wants a dot): it must still be a float
    (tmp_path / "c.yaml").write_text("inner:\n  lr: 1e-3\n  bins: 4\nsteps: 2.0\n")
    cfg = config.load(Outer, tmp_path / "c.yaml", ["items=[b, {name: v, t: [1, 2]}]"])
    assert cfg.inner.lr == 0.001 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.bins == (4,)  # one value where a list is expected: a one-item list
    assert cfg.steps == 2 and isinstance(cfg.steps, int)
    assert cfg.items == ("b", {"name": "v", "t": [1, 2]})  # names and mappings alike
    assert config.load(Outer, None, ["inner.lr=2e-2"]).inner.lr == 0.02


@pytest.mark.parametrize(("override", "message"), [
    ("inner.lr=abc", r"inner\.lr must be a number, got 'abc' \(from --set inner\.lr=abc\)"),
    ("inner.bins=[1,x]", r"inner\.bins\[1\] must be an integer, got 'x' \(from --set"),
    ("inner.bins=1,2", r"must be a list of integers.*e\.g\. \[1, 5\]"),
    ("mode=exakt", r"mode must be one of 'fast', 'exact', got 'exakt' \(did you mean 'exact'\?\)"),
    ("flag=maybe", "flag must be true or false, got 'maybe'"),
    ("steps=1.5", "steps must be an integer or null, got 1.5"),
    ("steps=-1", r"Outer: steps=-1: use a number >= 0 \(from --set steps=-1\)"),
    ("inner=3", "inner must be a mapping of Inner keys, got 3"),
    ("items=[[1]]", r"items\[0\] must be a string or a mapping, got \[1\]"),
    ("inner.lrr=1", r"unknown key inner\.lrr for Inner \(did you mean 'inner\.lr'\?\).*"
                    r"\(from --set inner\.lrr=1\)"),
    ("shots=[1,", "not valid YAML"),
    ("=3", "key=value"),
])
def test_bad_overrides_name_the_key_the_value_and_the_source(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load(Outer, None, [override])


def test_errors_say_whether_the_value_came_from_the_file_or_an_override(tmp_path):
    (tmp_path / "f.yaml").write_text("inner:\n  lrr: 0.5\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"inner\.lrr.*\(in .*f\.yaml\)$"):
        config.load(Outer, tmp_path / "f.yaml")
    (tmp_path / "g.yaml").write_text("inner:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"\(from train_overrides inner\.lr=x\)$") as err:
        config.load(Outer, tmp_path / "g.yaml", ["inner.lr=x"], overrides_from="train_overrides")
    assert err.value.key == "inner.lr"
    (tmp_path / "h.yaml").write_text("inner: [1\n")
    with pytest.raises(ConfigError, match=r"h\.yaml, line \d+ is not valid YAML"):
        config.load(Outer, tmp_path / "h.yaml")


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
