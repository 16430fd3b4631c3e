"""IDX files (MNIST, Fashion-MNIST): find them on disk, read them (raw or gzipped), cache the decoded arrays.

Searched in order: ``data.root``, ``$TRAINBENCH_DATA``, then ``/usr/share/datasets/<name>`` (Debian's
``dataset-fashion-mnist`` package); in each, also torchvision's ``<Name>/raw`` layout. Nothing is
downloaded unless ``data.download`` allows torchvision to.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from trainer_core.errors import DataError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SYSTEM_DIRS = {"mnist": "/usr/share/datasets/mnist", "fashion_mnist": "/usr/share/datasets/fashion-mnist"}
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# Decoded IDX arrays by (path, mtime, size). Every build_run reads the dataset again, and a matrix cell's
# guards build up to six runs: without the cache each gunzips the files anew (docs/measurements.md has
# what that cost). A file changed on disk has a new key.
_IDX_CACHE: dict[tuple[str, int, int], np.ndarray] = {}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or .gz) into a numpy array; a malformed file raises :class:`DataError`.

    Decoded files are kept for the life of the process; each call returns its own writable copy.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise DataError(f"{p}: cannot read IDX file ({e})") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _IDX_CACHE:
        _IDX_CACHE[key] = _decode_idx(p)
    return _IDX_CACHE[key].copy()


def _decode_idx(p: Path) -> np.ndarray:
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{p}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{p}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{p}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{p}: IDX payload is {len(raw) - header} bytes, header says {expected} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs(name: str, root: str | None) -> list[Path]:
    """Where IDX files for ``name`` are looked for, in order: config root, $TRAINBENCH_DATA, system dir."""
    bases: list[Path] = []
    if root:
        bases.append(Path(root).expanduser())
    env = os.environ.get("TRAINBENCH_DATA")
    if env:
        bases.append(Path(env).expanduser())
    bases.append(Path(SYSTEM_DIRS[name]))
    sub = name.replace("_", "-")
    out: list[Path] = []
    for b in bases:
        for d in (b, b / sub, b / name, b / _TORCHVISION_DIRS[name] / "raw"):
            if d not in out:
                out.append(d)
    return out


def locate_idx_dir(name: str, root: str | None, download: bool) -> Path:
    """Find a folder holding all four IDX files for ``name``, downloading via torchvision if allowed."""
    dirs = candidate_dirs(name, root)
    for d in dirs:
        if all(_find_file(d, stem) for pair in IDX_FILES.values() for stem in pair):
            return d
    if download:
        target = Path(root or os.environ.get("TRAINBENCH_DATA") or Path.home() / ".cache" / "trainbench").expanduser()
        try:
            import torchvision.datasets as tvd

            cls = tvd.FashionMNIST if name == "fashion_mnist" else tvd.MNIST
            for train in (True, False):
                cls(str(target), train=train, download=True)
        except Exception as e:  # network errors come in many types; the message is what matters
            raise DataError(
                f"data.download: torchvision could not download {name} into {target} ({type(e).__name__}: {e})"
            ) from None
        d = target / _TORCHVISION_DIRS[name] / "raw"
        if all(_find_file(d, stem) for pair in IDX_FILES.values() for stem in pair):
            return d
    looked = ", ".join(str(d) for d in dirs)
    hint = "apt-get install dataset-fashion-mnist" if name == "fashion_mnist" else "set data.root or TRAINBENCH_DATA"
    raise DataError(
        f"data.name={name}: IDX files not found (looked in: {looked}); {hint}, or set data.download=true where online"
    )


def load_idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_stem, lbl_stem = IDX_FILES[split]
    images = read_idx(_find_file(folder, img_stem))  # type: ignore[arg-type]
    labels = read_idx(_find_file(folder, lbl_stem))  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match")
    return images, labels.astype(np.int64)
