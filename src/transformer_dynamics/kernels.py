"""The compiled kernels behind the mutual-information estimators, and nothing else: two C kernels built at first
use and two kernel sums that ``torch.compile`` fuses.

C kernels (sources next to this module):

- ``kde_grid.c``: Gaussian kernel sums of whitened point sets on a grid, the KDE log densities built on them
  (:func:`grid_sums`, :func:`grid_log_density`) and the KDE mutual information of a stream's units between
  successive sublayers read straight from the stream (:func:`grid_mi_units`);
- ``ksg_counts.c``: the KSG estimator's k-th-neighbour radii and marginal counts by a sorted sweep
  (:func:`ksg_counts`).

Each is compiled once per source, compiler and CPU model (``-march=native``) into ``$TRANSFORMER_DYNAMICS_KERNELS``
(default: ``kernels`` in the user cache dir, never the activation cache, which may be a shared drive) and loaded
with ctypes. :func:`library` returns None, with a warning, where there is no C compiler or the build fails; the
estimators then take their exact (slower) paths.

Torch kernels: :func:`gauss_rowsum` (exact Gaussian kernel row sums) and :func:`count_within` (neighbour counts
within a radius), eager or through one fused ``torch.compile`` kernel when the work is large.

``$TRANSFORMER_DYNAMICS_NO_COMPILE=1`` turns both compilers off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .workers import thread_pool

__all__ = ["NO_COMPILE_ENV", "KERNELS_ENV", "build", "library", "grid_sums", "grid_log_density", "grid_mi_units",
           "ksg_counts", "gauss_rowsum", "count_within"]

#: Set this environment variable to 1 to use neither compiler (no C kernel, no ``torch.compile``).
NO_COMPILE_ENV = "TRANSFORMER_DYNAMICS_NO_COMPILE"
#: Folder for the compiled C kernels (default: ``kernels`` in the user cache dir).
KERNELS_ENV = "TRANSFORMER_DYNAMICS_KERNELS"

#: The C kernels and their compile and link flags, tried in order: the grid sums (fast math: float32 vector
#: exps, checked against the exact sums by the kernel itself) and the KSG counts (exact comparisons).
FLAGS = {
    "kde_grid": ((["-O3", "-march=native", "-ffast-math"], ["-lmvec", "-lm"]), (["-O3"], ["-lm"])),
    "ksg_counts": ((["-O3", "-march=native"], []), (["-O3"], [])),
}

_LIBS: dict[str, ctypes.CDLL | None] = {}
_TORCH: dict[str, Callable | None] = {}


def _compile_off() -> bool:
    """Whether ``$TRANSFORMER_DYNAMICS_NO_COMPILE`` turns the compilers off."""
    return os.environ.get(NO_COMPILE_ENV, "") not in ("", "0")


# ----------------------------------------------------------------------------------------------------
# C kernels: build, load, bind
# ----------------------------------------------------------------------------------------------------
def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    return cc


def _cpu() -> str:
    """The CPU model and flags (``-march=native`` builds one library per CPU model)."""
    cpu = platform.machine() + platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        cpu += "".join(ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                       if ln.startswith(("flags", "model name")))[:4096]
    return cpu


def build(folder: Path, name: str = "kde_grid") -> Path:
    """Compile ``name``.c (a key of :data:`FLAGS`) into ``folder``, once per source, compiler and CPU
    -> the shared library's path (atomic: concurrent builds end with one complete library)."""
    src = Path(__file__).with_name(f"{name}.c").read_bytes()
    flags = FLAGS[name]
    cc = _compiler()
    key = hashlib.sha256(src + cc.encode() + _cpu().encode() + repr(flags).encode()).hexdigest()[:16]
    lib = folder / f"{name}_{key}.so"
    if lib.exists():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        c, obj, so = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.o", Path(tmp) / f"{name}.so"
        c.write_bytes(src)
        for cflags, libs in flags:  # link without -ffast-math: no process-wide flush-to-zero
            run = [[cc, *cflags, "-fPIC", "-c", str(c), "-o", str(obj)],
                   [cc, "-shared", str(obj), "-o", str(so), *libs]]
            res = [subprocess.run(cmd, capture_output=True, text=True) for cmd in run[:1]]
            if res[0].returncode == 0:
                res.append(subprocess.run(run[1], capture_output=True, text=True))
            if all(r.returncode == 0 for r in res):
                os.replace(so, lib)
                return lib
            errors.append(res[-1].stderr.strip()[-500:])
    raise RuntimeError(f"compiling {name}.c failed: " + " | ".join(errors))


def _bind(lib: ctypes.CDLL, name: str) -> None:
    ptr, i32, i64, f64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_double
    if name == "kde_grid":
        lib.kde_grid_sums.argtypes = [i32, i32, i32, ptr, f64, i32, i32, i32, f64, ptr, ptr]
        lib.kde_log_density.argtypes = [i32, i32, i32, ptr, ptr, f64, f64, i32, i32, i32, f64, ptr, ptr]
        lib.kde_mi_units.argtypes = [i32, i32, i32, ptr, i32, i64, i64, ptr, f64, f64, i32, i32, i32, i32, f64, ptr,
                                     ptr]
        lib.kde_grid_sums.restype = lib.kde_log_density.restype = lib.kde_mi_units.restype = i32
    else:
        lib.ksg_counts.argtypes = [i32, i32, i32, ptr, ptr, ptr, ptr]
        lib.ksg_counts.restype = i32


def library(name: str) -> ctypes.CDLL | None:
    """The compiled C kernel ``name`` (a key of :data:`FLAGS`), loaded once per process, or None when the
    compilers are off or the build fails (then with a warning: "kde" sums exactly, "ksg" counts by brute force)."""
    if _compile_off():
        return None
    if name not in _LIBS:
        try:
            import platformdirs  # noqa: PLC0415

            folder = Path(os.environ.get(KERNELS_ENV)
                          or Path(platformdirs.user_cache_dir("transformer-dynamics")) / "kernels")
            lib = ctypes.CDLL(str(build(folder, name)))
            _bind(lib, name)
            _LIBS[name] = lib
        except Exception as exc:  # no compiler, a failed build: the slower exact path
            warnings.warn(f"the C kernel {name} is unavailable ({exc}); "
                          + ("method 'kde' sums exactly" if name == "kde_grid" else "'ksg' counts by brute force")
                          + " (slower)")
            _LIBS[name] = None
    return _LIBS[name]


def _run_sets(B: int, call: Callable[[int, int], int], per_thread: int = 8) -> None:
    """Run ``call(lo, hi)`` (a C kernel on sets lo..hi, returning its code) over B sets, split across torch's
    thread count (ctypes releases the GIL), at least ``per_thread`` sets a thread."""
    n_threads = max(1, min(torch.get_num_threads(), B // per_thread))
    bounds = np.linspace(0, B, n_threads + 1).astype(int)
    if n_threads == 1:
        codes = [call(0, B)]
    else:
        codes = list(thread_pool(n_threads).map(call, bounds[:-1], bounds[1:]))
    if any(codes):
        raise RuntimeError(f"a C kernel failed (codes {codes}: -1 bad arguments, -2 out of memory)")


def _ptr(a: np.ndarray, lo: int) -> int:
    return a[lo:].ctypes.data if a.size else 0


def grid_sums(lib: ctypes.CDLL, z: np.ndarray, h: float, max_nodes: int, max_far: int, check_points: int,
              check_rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """``kde_grid_sums`` of ``lib`` (:func:`library` ``"kde_grid"``) on ``z: (B, N, d)`` float64 C-contiguous:
    -> (sums (B, N) float64, status (B,) int8: 1 where the set was summed on the grid)."""
    B, N, d = z.shape
    s, status = np.empty((B, N)), np.zeros(B, dtype=np.int8)
    _run_sets(B, lambda lo, hi: lib.kde_grid_sums(
        hi - lo, N, d, _ptr(z, lo), h, max_nodes, max_far, check_points, check_rtol, _ptr(s, lo), _ptr(status, lo)))
    return s, status


def grid_log_density(lib: ctypes.CDLL, x: np.ndarray, y: np.ndarray | None, eps: float, h: float, max_nodes: int,
                     max_far: int, check_points: int, check_rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """``kde_log_density`` of ``lib``: whitening, gridded sums and ``log(density + eps)`` of the 1-D sets ``x``
    (``y`` None) or the 2-D sets ``(x, y)``, each ``(B, N)`` float64 C-contiguous -> (log density (B, N),
    status (B,) int8: 1 where done)."""
    B, N = x.shape
    d = 1 if y is None else 2
    ya = x if y is None else y
    out, status = np.empty((B, N)), np.zeros(B, dtype=np.int8)
    _run_sets(B, lambda lo, hi: lib.kde_log_density(
        hi - lo, N, d, _ptr(x, lo), _ptr(ya, lo), eps, h, max_nodes, max_far, check_points, check_rtol,
        _ptr(out, lo), _ptr(status, lo)))
    return out, status


def grid_mi_units(lib: ctypes.CDLL, src: np.ndarray, columns: np.ndarray, eps: float, h: float, max_nodes_1d: int,
                  max_nodes_2d: int, max_far: int, check_points: int, check_rtol: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``kde_mi_units`` of ``lib``: the KDE mutual information of the units ``columns`` of ``src: (n_samples,
    n_sublayers, D)`` (float32 or float64, any strides: read in place, no copy; other dtypes: the units' columns
    copied as float64) between successive sublayers, each
    density as :func:`grid_log_density` computes it -> (mi (n_sublayers - 1, U) float64, done (U,) bool: False
    where some set of the unit could not be gridded (the caller computes that unit))."""
    if src.dtype not in (np.float32, np.float64) or any(st % src.itemsize for st in src.strides):
        src, columns = np.ascontiguousarray(src[:, :, columns], dtype=np.float64), np.arange(len(columns))
    n, L, _ = src.shape
    si, sl, su = (st // src.itemsize for st in src.strides)
    cols = np.ascontiguousarray(np.asarray(columns, dtype=np.int64) * su)
    U = cols.size
    mi, status = np.empty((U, L - 1)), np.zeros(U, dtype=np.int8)
    f64 = int(src.dtype == np.float64)
    _run_sets(U, lambda lo, hi: lib.kde_mi_units(
        hi - lo, n, L, src.ctypes.data, f64, si, sl, _ptr(cols, lo), eps, h, max_nodes_1d, max_nodes_2d, max_far,
        check_points, check_rtol, _ptr(mi, lo), _ptr(status, lo)), per_thread=1)
    return mi.T, status.astype(bool)


def ksg_counts(lib: ctypes.CDLL, x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``ksg_counts`` of ``lib`` (:func:`library` ``"ksg_counts"``) on ``x, y: (B, N)`` float64 C-contiguous
    -> (n_x + 1, n_y + 1), each (B, N) int32: the points within each point's k-th-neighbour radius (max norm)
    along x and along y, the point itself included."""
    B, n = x.shape
    nx, ny = np.empty((B, n), dtype=np.int32), np.empty((B, n), dtype=np.int32)
    _run_sets(B, lambda lo, hi: lib.ksg_counts(hi - lo, n, k, _ptr(x, lo), _ptr(y, lo), _ptr(nx, lo), _ptr(ny, lo)))
    return nx, ny


# ----------------------------------------------------------------------------------------------------
# torch kernels: eager, or one fused torch.compile kernel
# ----------------------------------------------------------------------------------------------------
def _rowsum_eager(z: torch.Tensor) -> torch.Tensor:
    """z: (B, N, d) float32 -> (B, N): sum_j exp(-|z_i - z_j|^2 / 2)."""
    d = z[:, :, None, :] - z[:, None, :, :]
    return d.square_().sum(-1).mul_(-0.5).exp_().sum(-1)


def _rowsum_fused_1d(a: torch.Tensor) -> torch.Tensor:
    # written so that inductor fuses difference, square, exp and the sum into one loop (no B x N x N)
    da = a[:, :, None] - a[:, None, :]
    return torch.exp(-0.5 * (da * da)).sum(-1)


def _rowsum_fused_2d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    da = a[:, :, None] - a[:, None, :]
    db = b[:, :, None] - b[:, None, :]
    return torch.exp(-0.5 * (da * da + db * db)).sum(-1)


def _count_within_eager(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """x: (B, N), r: (B, N) -> (B, N) int: #{j : |x_i - x_j| < r_i} (the point itself included)."""
    return ((x[:, :, None] - x[:, None, :]).abs() < r[:, :, None]).sum(-1)


_FUSED = {"rowsum1": _rowsum_fused_1d, "rowsum2": _rowsum_fused_2d, "count": _count_within_eager}


def _compiled(key: str) -> Callable | None:
    """The ``torch.compile``d kernel ``key`` of :data:`_FUSED`, or None when compilation is off or unavailable."""
    if _compile_off():
        return None
    if key not in _TORCH:
        try:
            _TORCH[key] = torch.compile(_FUSED[key], dynamic=False)
        except Exception as exc:  # pragma: no cover - depends on the platform
            warnings.warn(f"torch.compile unavailable ({exc}); the {key} kernel runs eagerly")
            _TORCH[key] = None
    return _TORCH[key]


def gauss_rowsum(z: torch.Tensor, compile: bool | None = None, mem_bytes: int = 256 * 2**20) -> torch.Tensor:
    """Exact Gaussian kernel row sums for a batch of point clouds.

    z: (B, N, d) float32 whitened and bandwidth-scaled points, d in (1, 2) -> (B, N) float32,
    ``S[b, i] = sum_j exp(-|z[b, i] - z[b, j]|^2 / 2)`` (self term included, as scipy's KDE).
    compile: use the fused ``torch.compile`` kernel (None: when the work is large, > 1e8 kernel terms:
    e.g. the default chunk of 256 unit pairs at N = 1000).
    """
    B, N, d = z.shape
    fn = None
    if d in (1, 2) and (compile or (compile is None and B * N * N > 1e8)):
        fn = _compiled(f"rowsum{d}")
    out = torch.empty(B, N, dtype=torch.float32)
    if fn is not None:
        coords = [z[..., c].contiguous() for c in range(d)]
        chunk = min(B, 64)
        for s in range(0, B, chunk):
            blk = [c[s:s + chunk] for c in coords]
            n_blk = blk[0].shape[0]
            if n_blk < chunk:  # pad to one fixed shape: no recompilation for the last chunk
                blk = [torch.cat([c, c.new_zeros(chunk - n_blk, N)]) for c in blk]
            try:
                out[s:s + n_blk] = fn(*blk)[:n_blk]
            except Exception as exc:  # pragma: no cover - compiler missing at run time
                warnings.warn(f"compiled KDE kernel failed ({exc}); falling back to eager torch")
                _TORCH[f"rowsum{d}"] = None
                return gauss_rowsum(z, compile=False, mem_bytes=mem_bytes)
        return out
    chunk = max(1, int(mem_bytes // (N * N * 4 * max(d, 1))))
    for s in range(0, B, chunk):
        out[s:s + chunk] = _rowsum_eager(z[s:s + chunk])
    return out


def count_within(x: torch.Tensor, r: torch.Tensor, fused: bool, pad_to: int) -> torch.Tensor:
    """``#{j : |x_i - x_j| < r_i}`` (the point itself included): x, r: (B, N) -> (B, N) int.

    fused: through the ``torch.compile``d kernel where available, with the batch padded to ``pad_to`` sets
    (one compiled shape for every chunk); else eager."""
    fn = _compiled("count") if fused else None
    if fn is None:
        return _count_within_eager(x, r)
    B, n = x.shape
    if B < pad_to:
        pad = pad_to - B
        return fn(torch.cat([x, x.new_zeros(pad, n)]), torch.cat([r, r.new_ones(pad, n)]))[:B]
    return fn(x, r)
