"""Per-frame video quality metrics against a reference video: PSNR, SSIM and (optionally) LPIPS.

Every function takes two uint8 videos `[F, H, W, 3]` (RGB) of the same shape, `ref` first, and
returns one float64 value per frame. They are what `vidsparse compare` reports for each method
against dense attention on the same prompt and seed.

    >>> psnr_per_frame(dense_video, sparse_video)     # dB, +inf where a frame is identical
    >>> ssim_per_frame(dense_video, sparse_video)     # 1.0 where a frame is identical
    >>> lpips_available()                             # (False, "the lpips package is not installed ...")

Definitions:
    PSNR: 10 * log10(255^2 / MSE) over every pixel and channel of a frame, with the MSE summed in
        exact integer arithmetic. An identical frame has MSE 0 and PSNR = +inf (`math.inf`); the
        report writes it as "inf".
    SSIM: Wang et al. (2004) with the standard Gaussian window (11 x 11, sigma 1.5), K1 = 0.01,
        K2 = 0.03 and data range 255, computed on luma Y = 0.299 R + 0.587 G + 0.114 B (BT.601,
        unrounded), as video-quality tools usually do, by `skimage.metrics.structural_similarity`
        (`gaussian_weights=True, use_sample_covariance=False`), which averages over the "valid" window
        positions (a 5-pixel border is left out). Identical frames give exactly 1.0.
    LPIPS: the `lpips` package's AlexNet metric, used only when the package and all of its weights
        are already on disk (`lpips_available`); vidsparse never downloads anything.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

import numpy as np

__all__ = ["lpips_available", "lpips_per_frame", "psnr_per_frame", "ssim_per_frame"]

logger = logging.getLogger(__name__)

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0
LUMA_BT601 = (0.299, 0.587, 0.114)

# Frames per chunk: bounds the float temporaries at ~480x720x49 to a few hundred MB at most.
_CHUNK = 8


def _check_pair(ref: np.ndarray, test: np.ndarray, min_size: int = 1) -> None:
    """Raise a TypeError unless both are numpy arrays, and a ValueError unless they are uint8
    [F, H, W, 3] videos of one shape."""
    for name, video in (("ref", ref), ("test", test)):
        if not isinstance(video, np.ndarray):
            raise TypeError(f"{name} must be a numpy array; got {type(video).__name__}")
        if video.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 (0..255); got dtype {video.dtype}")
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"{name} must be a video [F, H, W, 3]; got shape {video.shape}")
        if video.shape[0] == 0:
            raise ValueError(f"{name} has no frames")
        if min(video.shape[1:3]) < min_size:
            raise ValueError(f"{name} frames are {video.shape[1]}x{video.shape[2]}; need at least "
                             f"{min_size}x{min_size} pixels")
    if ref.shape != test.shape:
        raise ValueError(f"ref and test must have the same shape; got {ref.shape} and {test.shape}")


def _identical_frames(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    """bool [F]: frames that are equal pixel for pixel."""
    return np.array([np.array_equal(a, b) for a, b in zip(ref, test)])


# ---------------------------------------------------------------------------------------- PSNR
def psnr_per_frame(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    """PSNR in dB of each frame of `test` against `ref` (uint8 [F, H, W, 3]); float64 [F], +inf
    for identical frames."""
    _check_pair(ref, test)
    sse = np.empty(ref.shape[0], dtype=np.int64)
    for start in range(0, ref.shape[0], _CHUNK):
        # int32 differences square without overflow (255^2), and int64 sums stay exact
        diff = ref[start:start + _CHUNK].astype(np.int32) - test[start:start + _CHUNK]
        sse[start:start + _CHUNK] = np.einsum("fhwc,fhwc->f", diff, diff, dtype=np.int64)
    mse = sse / float(np.prod(ref.shape[1:]))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(DATA_RANGE**2 / mse)


# ---------------------------------------------------------------------------------------- SSIM
def ssim_per_frame(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    """SSIM of each frame of `test` against `ref` (uint8 [F, H, W, 3], frames at least 11x11) on
    BT.601 luma with the 11x11 sigma-1.5 Gaussian window (`skimage.metrics.structural_similarity`);
    float64 [F], 1.0 for identical frames."""
    from skimage.metrics import structural_similarity

    _check_pair(ref, test, min_size=SSIM_WINDOW)
    out = np.ones(ref.shape[0], dtype=np.float64)  # identical frames: exactly 1, and not computed
    for f in np.flatnonzero(~_identical_frames(ref, test)):
        out[f] = structural_similarity(
            _luma(ref[f]), _luma(test[f]), data_range=DATA_RANGE, gaussian_weights=True, sigma=SSIM_SIGMA,
            use_sample_covariance=False, K1=SSIM_K1, K2=SSIM_K2,
        )
    return out


def _luma(frame: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> float64 [H, W] BT.601 luma (unrounded)."""
    return frame.astype(np.float64) @ np.asarray(LUMA_BT601)


# ---------------------------------------------------------------------------------------- LPIPS
def lpips_available() -> tuple[bool, str]:
    """Whether LPIPS can run offline: (True, what it uses) or (False, why not).

    True only when the `lpips` package is importable, its linear-layer weights
    (`lpips/weights/v0.1/alex.pth`) are in the package and torchvision's AlexNet backbone
    checkpoint is already in the torch hub cache. Nothing is imported or downloaded."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return False, ("LPIPS left out: the lpips package is not installed (it is optional; install it and "
                       "torchvision's AlexNet weights to add LPIPS)")
    linear = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / "alex.pth"
    if not linear.is_file():
        return False, f"LPIPS left out: the lpips package has no weights file at {linear}"
    backbone = _alexnet_checkpoint()
    if backbone is None:
        return False, ("LPIPS left out: torchvision's AlexNet weights (alexnet-*.pth) are not in the torch hub "
                       "cache, and vidsparse never downloads them")
    return True, f"LPIPS (AlexNet) with weights {linear} and {backbone}"


def _alexnet_checkpoint() -> Path | None:
    import torch

    found = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob("alexnet-*.pth"))
    return found[0] if found else None


@functools.cache
def _lpips_model():
    import lpips

    logger.info("loading LPIPS (AlexNet) from local weights")
    return lpips.LPIPS(net="alex", verbose=False).eval()


def lpips_per_frame(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    """LPIPS (AlexNet) of each frame of `test` against `ref`; float64 [F], 0 for identical frames.

    Raises RuntimeError with `lpips_available`'s reason when LPIPS cannot run offline."""
    import torch

    _check_pair(ref, test)
    ok, reason = lpips_available()
    if not ok:
        raise RuntimeError(reason)
    model, out = _lpips_model(), []
    with torch.no_grad():
        for start in range(0, ref.shape[0], _CHUNK):
            a, b = (_to_lpips_input(v[start:start + _CHUNK]) for v in (ref, test))
            out.append(model(a, b).flatten().double())
    return torch.cat(out).numpy()


def _to_lpips_input(frames: np.ndarray):
    """uint8 [n, H, W, 3] -> float32 [n, 3, H, W] in [-1, 1], as LPIPS expects."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
