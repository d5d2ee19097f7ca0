"""fsstools.cache and fsstools.cache: content keys, code versions, umask, atomic folders."""

from __future__ import annotations

import os

import pytest

from fsstools import cache


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
    # evaluate imports the trainer inside a function, and that import counts
    assert "fsstools.training" in cache.imported_modules("fsstools.evaluation.pipeline")
    with pytest.raises(ValueError, match="not a module"):
        cache.imported_modules("fsstools.nothing_here")


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755),
                                                        (0o077, 0o600, 0o700)])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        path = cache.atomic_write_text(tmp_path / "x" / "a.txt", "hi")
        with cache.atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "inside").write_text("")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "folder").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "folder" / "inside").is_file()


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), cache.atomic_dir(tmp_path / "f") as tmp:
        (tmp / "half").write_text("")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_reuse_is_announced_in_one_line(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("")
    cache.announce_reuse("scores", tmp_path / "x.csv")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(f"reusing scores from {tmp_path / 'x.csv'}")


def _hold(name: str, log: str, outputs: str) -> None:
    """Child process: take the lock, record entry and exit times around a short hold."""
    import time

    os.environ["FSSTOOLS_OUTPUTS"] = outputs
    with cache.locked(name):
        with open(log, "a") as f:
            f.write(f"in {time.monotonic()}\n")
        time.sleep(0.2)
        with open(log, "a") as f:
            f.write(f"out {time.monotonic()}\n")


def test_lock_is_exclusive_across_processes_and_leaves_no_file(outputs, tmp_path):
    import multiprocessing as mp

    log = tmp_path / "log"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hold, args=("stage-x", str(log), str(outputs)))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    events = [line.split() for line in log.read_text().splitlines()]
    # holds never overlap: the log alternates in, out, in, out, ...
    assert [kind for kind, _ in events] == ["in", "out"] * 3
    assert not (outputs / "cache").exists()  # lock file and its empty folders removed


def test_lock_keeps_a_cache_folder_in_use(outputs):
    (outputs / "cache" / "scores").mkdir(parents=True)
    with cache.locked("y"):
        assert (outputs / "cache" / "locks" / "y.lock").is_file()
    assert not (outputs / "cache" / "locks").exists()
    assert (outputs / "cache" / "scores").is_dir()
