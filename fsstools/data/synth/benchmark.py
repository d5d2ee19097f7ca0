"""The embedded synthetic benchmark on demand: generated once per config, then reused.

Generated in VOC layout (see ``data/README.md``), deterministic from a seed and cached:
``<root>/synth.json`` records the generating config and its hash, and a second call with the
same config reuses the files (announced). A contact sheet of sample images is drawn beside
them; the sheet is not part of the generator's version, so redrawing it never regenerates
the data.

    >>> from pathlib import Path
    >>> root = ensure_synth(Path("data/synth"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from fsstools import cache
from fsstools.data.synth.generate import SynthConfig, SynthError, generate, is_current, synth_hash
from fsstools.data.synth.manifest import CONTACT_SHEET, MANIFEST
from fsstools.data.synth.sheet import contact_sheet


def ensure_synth(
    root: Path, cfg: SynthConfig = SynthConfig(), progress: bool = True, workers: int | None = None
) -> Path:
    """Return ``root`` holding the benchmark for ``cfg``, generating it unless already there.

    Args:
        root: output folder; gets one sub-folder per style, ``synth.json`` and a contact sheet.
        cfg: what to generate; a different config than the cached one regenerates.
        progress: show a progress bar and print what happened.
        workers: processes to render with (default: all CPUs); does not change the output.

    Raises:
        SynthError: ``root`` is not writable, or holds style folders not written by us.
    """
    root = Path(root)
    _check_writable(root)
    with cache.locked(f"synth-{cache.cache_key(root=root.resolve())}"):
        if is_current(root, cfg):
            if progress:
                cache.announce_reuse(f"synthetic data ({synth_hash(cfg)})", root / MANIFEST)
            if not (root / CONTACT_SHEET).is_file():
                contact_sheet(root, root / CONTACT_SHEET)
            return root
        manifest = generate(root, cfg, workers, progress)
        contact_sheet(root, root / CONTACT_SHEET)
    if progress:
        print(f"generated synthetic data in {root} in {manifest['seconds']} s")
        for key, s in manifest["stats"].items():
            print(f"  {key}: {describe(s)}")
    return root


def describe(stats: dict) -> str:
    """One line on a split's ``stats.summarise`` statistics."""
    q = stats["held_share_quantiles"]
    if not q:
        return "no image holds a class"
    return (
        f"held (image, class) pairs cover a median {q['0.5']:.3f} of the image "
        f"(5-95%: {q['0.05']:.3f}-{q['0.95']:.3f}, {stats['range_ratio']:.1f}x); "
        f"class medians differ {stats['median_ratio']:.1f}x; "
        f"images per class >= {min(stats['images_per_class'])}"
    )


def _check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SynthError(f"cannot write to {root} ({e}); choose a writable --out folder") from None
