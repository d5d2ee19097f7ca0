"""fsstools.cache and fsstools.artifacts: content keys, code versions, umask, atomic folders."""

from __future__ import annotations

import os

import pytest

from fsstools import artifacts, cache


def test_fingerprint_follows_rewrites_and_missing_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"1")
    first = cache.fingerprint_files(tmp_path, ["a.png", "b.png"])
    assert cache.fingerprint_files(tmp_path, ["a.png", "b.png"]) == first
    (tmp_path / "b.png").write_bytes(b"2")  # a missing file appears
    second = cache.fingerprint_files(tmp_path, ["a.png", "b.png"])
    assert second != first
    os.utime(tmp_path / "a.png", ns=(1, 1))  # same bytes, rewritten later
    assert cache.fingerprint_files(tmp_path, ["a.png", "b.png"]) != second


def test_code_version_ignores_docstrings_and_comments_only(tmp_path, monkeypatch):
    module = tmp_path / "fsstools" / "probe.py"
    module.parent.mkdir()
    (module.parent / "__init__.py").write_text("")
    monkeypatch.setattr(cache, "_PACKAGE_DIR", module.parent)
    versions = []
    for source in ('"""Doc."""\nX = 1\n', '"""Other doc."""\nX = 1  # a comment\n',
                   '"""Doc."""\nX = 2\n'):
        module.write_text(source)
        cache._module_digest.cache_clear()
        cache.modules_feeding.cache_clear()
        versions.append(cache.code_version("fsstools.probe"))
    cache._module_digest.cache_clear()
    cache.modules_feeding.cache_clear()
    assert versions[0] == versions[1] != versions[2]


def test_imports_inside_functions_count():
    # evaluate imports the trainer inside a function; it still feeds the score cache
    assert "fsstools.training" in cache.imported_modules("fsstools.evaluate")
    with pytest.raises(ValueError, match="not a module"):
        cache.imported_modules("fsstools.nothing_here")


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755),
                                                        (0o077, 0o600, 0o700)])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        path = artifacts.atomic_write_text(tmp_path / "x" / "a.txt", "hi")
        with artifacts.atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "inside").write_text("")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "folder").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "folder" / "inside").is_file()


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), artifacts.atomic_dir(tmp_path / "f") as tmp:
        (tmp / "half").write_text("")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_reuse_is_announced_in_one_line(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("")
    cache.announce_reuse("scores", tmp_path / "x.csv")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(f"reusing scores from {tmp_path / 'x.csv'}")
