"""The compressing autoencoder's network (CAE, paper section 2.7, Figure 3); training it: :mod:`.cae`.

:class:`CompressingAutoencoder` has encoder widths in the geometric progression of :func:`geometric_widths`
and a mirrored decoder; its input scaler (:class:`Standardizer`) lives inside the module as buffers, so
``state_dict()`` plus :meth:`CompressingAutoencoder.config` is the whole trained model and
``encode``/``forward`` take raw residual-stream vectors ``(..., d_model)``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..validation import check_int, check_positive_int
from ._common import _as_rows

__all__ = ["Standardizer", "geometric_widths", "CompressingAutoencoder"]


class Standardizer:
    """Invertible affine input scaling for the CAE, ``z = (x - mean_) / scale_``, fitted on training rows.

    kind: ``"standard"`` (per-feature mean and standard deviation: every feature weighs equally in the MSE,
    which keeps a few huge "massive activation" features from owning the loss), ``"global"`` (per-feature
    mean, one scalar scale = the RMS of the centred data: preserves the geometry of the residual stream up to
    a shift and a zoom) or ``"none"``. The same map is applied to every sublayer (it does not know a vector's
    depth), so the bottleneck trajectory is the image of the RS trajectory under one fixed function and the
    growth of the RS norm over depth stays visible in it. Features with zero variance get scale 1.

    ``fit``/``partial_fit`` take ``(n_rows, d)`` or ``(n_samples, n_sublayers, d)``; sums accumulate in
    float64. Attributes: ``mean_ (d,)``, ``scale_ (d,)`` float64.
    """

    KINDS = ("standard", "global", "none")

    def __init__(self, kind: str = "standard"):
        if kind not in self.KINDS:
            raise ValueError(f"scaling must be one of {self.KINDS}; got {kind!r}")
        self.kind = kind
        self._n = 0
        self._shift = None
        self._s1 = None
        self._s2 = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def partial_fit(self, X: Any) -> "Standardizer":
        X = _as_rows(X).astype(np.float64)
        if self._shift is None:
            self._shift = X.mean(0)
            self._s1 = np.zeros(X.shape[1])
            self._s2 = np.zeros(X.shape[1])
        Y = X - self._shift
        self._s1 += Y.sum(0)
        self._s2 += (Y ** 2).sum(0)
        self._n += X.shape[0]
        m = self._s1 / self._n
        var = np.maximum(self._s2 / self._n - m ** 2, 0.0)
        d = X.shape[1]
        if self.kind == "none":
            self.mean_, self.scale_ = np.zeros(d), np.ones(d)
            return self
        self.mean_ = self._shift + m
        if self.kind == "standard":
            std = np.sqrt(var)
            self.scale_ = np.where(std > 1e-12 * max(std.max(), 1e-300), std, 1.0)
        else:
            rms = math.sqrt(var.sum() / d)
            self.scale_ = np.full(d, rms if rms > 0 else 1.0)
        return self

    def fit(self, X: Any) -> "Standardizer":
        self.__init__(self.kind)
        return self.partial_fit(X)

    def _check(self) -> None:
        if self.mean_ is None:
            raise ValueError("the Standardizer is not fitted; call fit(X) first")

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(..., d) -> (..., d)``: ``(X - mean_) / scale_``."""
        self._check()
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        """``(..., d) -> (..., d)``: ``Z * scale_ + mean_``."""
        self._check()
        return np.asarray(Z, dtype=np.float64) * self.scale_ + self.mean_


def geometric_widths(d_in: int, d_bottle: int = 2, k: int = 10) -> list[int]:
    """Layer widths of the CAE encoder (paper 2.7): ``d_i = d_in * r**i`` for ``i = 0 … k-1`` with
    ``r = (d_bottle / d_in) ** (1 / (k - 1))``, rounded to integers, so ``d_0 = d_in`` and
    ``d_{k-1} = d_bottle``.

    Returns ``k`` ints (``k`` layers of units, input and bottleneck included, hence ``k - 1`` Linear maps in
    the encoder and ``k - 1`` in the mirrored decoder). Widths never go below ``d_bottle`` and never increase.
    """
    k = check_int(k, "k (layers, input and bottleneck included)", low=2)
    d_in = check_positive_int(d_in, "d_in")
    d_bottle = check_positive_int(d_bottle, "d_bottle")
    if not (1 <= d_bottle <= d_in):
        raise ValueError(f"need 1 <= d_bottle <= d_in; got d_in={d_in}, d_bottle={d_bottle}")
    r = (d_bottle / d_in) ** (1.0 / (k - 1))
    widths = [int(round(d_in * r ** i)) for i in range(k)]
    widths[0], widths[-1] = int(d_in), int(d_bottle)
    out = []
    for w in widths:
        w = max(w, d_bottle)
        out.append(min(w, out[-1]) if out else w)
    return out


def _stack(widths: Sequence[int]) -> nn.Sequential:
    """Linear -> LayerNorm -> ReLU between consecutive widths; the last layer is Linear only."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers += [nn.LayerNorm(b), nn.ReLU()]
    return nn.Sequential(*layers)


class CompressingAutoencoder(nn.Module):
    """The paper's compressing autoencoder (section 2.7).

    Encoder: widths ``geometric_widths(d_model, d_bottle, k)``; each Linear is followed by LayerNorm and ReLU
    except the last (the bottleneck is linear). Decoder: the mirrored widths, same rule (linear output).
    The input scaler is stored as buffers ``input_mean``/``input_scale`` (``(d_model,)``), so ``encode`` and
    ``forward`` take **raw** residual-stream vectors and ``forward`` returns raw reconstructions;
    ``encode_scaled``/``forward_scaled`` work in the scaled space the loss is computed in.

    Shapes: ``encode: (..., d_model) -> (..., d_bottle)``, ``decode: (..., d_bottle) -> (..., d_model)``.
    """

    def __init__(self, d_model: int, d_bottle: int = 2, k: int = 10, widths: Sequence[int] | None = None):
        super().__init__()
        widths = list(widths) if widths is not None else geometric_widths(d_model, d_bottle, k)
        if widths[0] != d_model or widths[-1] != d_bottle:
            raise ValueError(f"widths must run from d_model={d_model} to d_bottle={d_bottle}; got {widths}")
        self.widths = widths
        self.encoder = _stack(widths)
        self.decoder = _stack(widths[::-1])
        self.register_buffer("input_mean", torch.zeros(d_model))
        self.register_buffer("input_scale", torch.ones(d_model))

    @property
    def d_model(self) -> int:
        return self.widths[0]

    @property
    def d_bottle(self) -> int:
        return self.widths[-1]

    def config(self, scaling: str | None = None) -> dict[str, Any]:
        """JSON-able description: enough, with ``state_dict()``, to rebuild the module."""
        return {"class": "CompressingAutoencoder", "widths": list(map(int, self.widths)),
                "d_model": self.d_model, "d_bottle": self.d_bottle, "k": len(self.widths),
                **({"scaling": scaling} if scaling else {})}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CompressingAutoencoder":
        widths = config["widths"]
        return cls(widths[0], widths[-1], widths=widths)

    def set_scaler(self, scaler: Standardizer) -> "CompressingAutoencoder":
        scaler._check()
        self.input_mean.copy_(torch.as_tensor(scaler.mean_, dtype=self.input_mean.dtype))
        self.input_scale.copy_(torch.as_tensor(scaler.scale_, dtype=self.input_scale.dtype))
        return self

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_scale

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.input_scale + self.input_mean

    def encode_scaled(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward_scaled(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.scale(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.unscale(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


# ----------------------------------------------------------------------------------------------------------
# CAE: training
# ----------------------------------------------------------------------------------------------------------
