"""Training and applying the compressing autoencoder (CAE, paper section 2.7, Figure 3; the network itself:
:mod:`.autoencoder`).

:func:`fit_cae` trains it with the paper's recipe (Adam 1e-3, MSE, at most 100
epochs, early stopping with patience 10, best weights kept), splitting texts (not vectors) into train /
validation / test, and streams chunks of texts so ``rs`` may be a memory map or a store.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from ..arrays import rs_shape
from ..validation import check_int, check_number, check_positive_int, check_seed
from ._common import _iter_selected, _sst
from .autoencoder import CompressingAutoencoder, Standardizer

__all__ = [
    "CAEResult",
    "split_by_sample",
    "fit_cae",
    "bottleneck_trajectories",
    "reconstruct",
    "explained_variance_per_sublayer_cae",
]


def split_by_sample(n_samples: int, *, test_fraction: float = 0.15, val_fraction: float = 0.1,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split text indices ``0 … n_samples-1`` into (train, validation, test), sorted int arrays.

    All sublayers of a text go to the same side (the paper: 85k train / 15k test texts). ``test_fraction`` and
    ``val_fraction`` are fractions of all texts; each non-zero fraction gets at least one text.
    """
    n_samples, seed = check_positive_int(n_samples, "n_samples"), check_seed(seed)
    test_fraction = check_number(test_fraction, "test_fraction", low=0, high=1, high_open=True)
    val_fraction = check_number(val_fraction, "val_fraction", low=0, high=1, high_open=True)
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ValueError(f"need 0 <= test_fraction, val_fraction and test_fraction + val_fraction < 1; got "
                         f"{test_fraction}, {val_fraction}")
    n_test = int(round(test_fraction * n_samples)) if test_fraction else 0
    n_val = int(round(val_fraction * n_samples)) if val_fraction else 0
    n_test = max(n_test, 1) if test_fraction else 0
    n_val = max(n_val, 1) if val_fraction else 0
    if n_samples - n_test - n_val < 1:
        raise ValueError(f"n_samples={n_samples} is too small for the split (test {n_test}, val {n_val}); "
                         "use more texts or smaller fractions")
    perm = np.random.default_rng(seed).permutation(n_samples)
    test = np.sort(perm[:n_test])
    val = np.sort(perm[n_test:n_test + n_val])
    train = np.sort(perm[n_test + n_val:])
    return train, val, test


@dataclass
class CAEResult:
    """A trained CAE and how it was trained.

    model: the :class:`CompressingAutoencoder` with the best validation weights (scaler inside);
    config: JSON-able (widths, scaling, hyper-parameters); history: per-epoch ``train_loss``/``val_loss``
    (MSE in the scaled space); best_epoch (0-based); train_idx/val_idx/test_idx: text indices of the split;
    test_loss: scaled-space MSE on the test texts; test_ev: explained variance of all test vectors about their
    mean (raw space); train_time_s: wall time of training.
    """

    model: CompressingAutoencoder
    config: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = -1
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None
    test_idx: np.ndarray | None = None
    test_loss: float = float("nan")
    test_ev: float = float("nan")
    train_time_s: float = float("nan")

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, meta)``: the model's ``state_dict`` (keys prefixed ``model.``) plus the split indices as
        tensors, and a JSON-able dict with the config (architecture, scaling, hyper-parameters), history and
        metrics. :meth:`from_state` inverts it (tensors may also be numpy arrays), so the pair goes straight
        through ``cache.save_module(root, identity, tensors, meta)`` / ``cache.load_module(root, identity)``."""
        tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        for name in ("train_idx", "val_idx", "test_idx"):
            idx = getattr(self, name)
            if idx is not None:
                tensors[name] = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        meta = {"config": self.config, "history": self.history, "best_epoch": int(self.best_epoch),
                "test_loss": float(self.test_loss), "test_ev": float(self.test_ev),
                "train_time_s": float(self.train_time_s)}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "CAEResult":
        model = CompressingAutoencoder.from_config(meta["config"])
        model.load_state_dict({k[len("model."):]: torch.as_tensor(np.asarray(v)) for k, v in tensors.items()
                               if k.startswith("model.")})
        model.eval()
        idx = {n: (np.asarray(tensors[n]) if n in tensors else None) for n in ("train_idx", "val_idx", "test_idx")}
        return cls(model=model, config=meta["config"], history=meta.get("history", {}),
                   best_epoch=meta.get("best_epoch", -1), test_loss=meta.get("test_loss", float("nan")),
                   test_ev=meta.get("test_ev", float("nan")), train_time_s=meta.get("train_time_s", float("nan")),
                   **idx)


def _batches(rs: Any, samples: np.ndarray, chunk_samples: int, batch_size: int, gen: torch.Generator | None,
             device: torch.device) -> Iterable[torch.Tensor]:
    """Rows (sublayer vectors) of ``rs[samples]`` in mini-batches; blocks and rows shuffled when ``gen``."""
    for block in _iter_selected(rs, samples, chunk_samples, gen):
        rows = torch.from_numpy(block.reshape(-1, block.shape[-1])).to(device)
        if gen is not None:
            rows = rows[torch.randperm(rows.shape[0], generator=gen).to(device)]
        for b in range(0, rows.shape[0], batch_size):
            yield rows[b:b + batch_size]


@torch.no_grad()
def _mean_loss(model: CompressingAutoencoder, rs: Any, samples: np.ndarray, chunk_samples: int,
               batch_size: int, device: torch.device) -> float:
    total, count = 0.0, 0
    for x in _batches(rs, samples, chunk_samples, max(batch_size, 4096), None, device):
        xs = model.scale(x)
        total += float(((model.forward_scaled(xs) - xs) ** 2).sum(dtype=torch.float64))
        count += x.numel()
    return total / max(count, 1)


def fit_cae(rs: Any, *, k: int = 10, d_bottle: int = 2, epochs: int = 100, patience: int = 10,
            lr: float = 1e-3, batch_size: int = 256, test_fraction: float = 0.15, val_fraction: float = 0.1,
            seed: int = 0, scaling: str = "standard", chunk_samples: int | None = None,
            device: str | torch.device | None = None, num_threads: int | None = None,
            progress: bool = True) -> CAEResult:
    """Train the compressing autoencoder on residual-stream vectors (paper section 2.7); returns a
    :class:`CAEResult` (model in eval mode).

    Parameters
    ----------
    rs: ``(n_samples, n_sublayers, d_model)``: a numpy array, ``np.memmap``, torch tensor, or a store with
        ``shape`` and ``read(start, stop)`` (:class:`transformer_dynamics.cache.ActivationStore`), so a cached
        capture streams from disk with ``chunk_samples``.
    k: layers of units per half, input and bottleneck included (:func:`geometric_widths`; the paper's Fig 3
        used 10). d_bottle: bottleneck width (2).
    epochs, patience, lr: at most ``epochs`` epochs of Adam(lr) on the MSE; stop when the validation loss
        has not improved for ``patience`` epochs; the best-validation weights are kept.
    batch_size: sublayer vectors per step. Every sublayer vector is one training sample.
    test_fraction, val_fraction: fractions of **texts** held out (:func:`split_by_sample`); all sublayers of
        a text land on one side. Validation drives early stopping; test is only evaluated at the end.
    seed: seeds the split, the initial weights and the shuffling (same seed and data -> same weights on the
        same machine and thread count).
    scaling: input scaling fitted on the training texts only (:class:`Standardizer`): ``"standard"``
        (default, per-feature standardisation), ``"global"`` or ``"none"``. The loss is the MSE in the
        scaled space; outputs (trajectories, reconstructions, explained variance) are in raw RS units.
    chunk_samples: texts read at a time (default: all, i.e. in memory). Set it to stream ``rs`` from disk:
        each epoch reads contiguous blocks of ``chunk_samples`` texts in a random block order, keeps the
        training texts of each block and shuffles their rows (memory holds one block).
    device: torch device (default CPU). num_threads: torch CPU threads while training (default: leave as
        is); the network is small, so 1 thread is often as fast and far faster on a busy machine.
    progress: a tqdm bar over epochs showing the losses.
    """
    rs_shape(rs)
    k = check_int(k, "k (layers, input and bottleneck included)", low=2)
    d_bottle, epochs = check_positive_int(d_bottle, "d_bottle"), check_positive_int(epochs, "epochs")
    patience, batch_size = check_positive_int(patience, "patience"), check_positive_int(batch_size, "batch_size")
    lr, seed = check_number(lr, "lr", low=0, low_open=True), check_seed(seed)
    chunk_samples = check_positive_int(chunk_samples, "chunk_samples", none=True)
    num_threads = check_positive_int(num_threads, "num_threads", none=True)
    _kw = dict(k=k, d_bottle=d_bottle, epochs=epochs, patience=patience, lr=lr, batch_size=batch_size,
               test_fraction=test_fraction, val_fraction=val_fraction, seed=seed, scaling=scaling,
               chunk_samples=chunk_samples, device=device, progress=progress)
    if num_threads is None:
        return _fit_cae(rs, **_kw)
    old = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        return _fit_cae(rs, **_kw)
    finally:
        torch.set_num_threads(old)


def _fit_cae(rs, *, k, d_bottle, epochs, patience, lr, batch_size, test_fraction, val_fraction, seed, scaling,
             chunk_samples, device, progress) -> CAEResult:
    """The training loop behind :func:`fit_cae` (arguments as there, already validated for ``rs``).

    1. Split the texts (not the vectors) into train / validation / test (:func:`split_by_sample`).
    2. Fit the input scaler on the training texts only, streaming blocks of ``chunk_samples`` texts, and
       store it inside the network, so the network itself maps raw vectors.
    3. Initialise the weights under ``torch.manual_seed(seed)`` without touching the global RNG state.
    4. Each epoch: visit the blocks in a random order and the rows of each block in a random order (one
       ``torch.Generator`` seeded with ``seed``: the same seed and data give the same weights), one Adam
       step per mini-batch on the MSE in the scaled space; then the validation MSE (the training texts when
       there is no validation split). Keep a copy of the weights with the lowest validation loss; stop after
       ``patience`` epochs without improvement.
    5. Restore the best weights; measure the test MSE and the test texts' pooled explained variance.
    Only the training itself is in ``train_time_s``.
    """
    n, s, d = rs.shape
    if epochs < 1 or patience < 1:
        raise ValueError(f"epochs and patience must be >= 1; got {epochs}, {patience}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    chunk = n if not chunk_samples else int(chunk_samples)
    train_idx, val_idx, test_idx = split_by_sample(n, test_fraction=test_fraction, val_fraction=val_fraction,
                                                   seed=seed)
    scaler = Standardizer(scaling)
    for block in _iter_selected(rs, train_idx, chunk):
        scaler.partial_fit(block)

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CompressingAutoencoder(d, d_bottle, k)
    model.set_scaler(scaler)
    model.to(dev)
    gen = torch.Generator().manual_seed(seed)
    eval_samples = val_idx if len(val_idx) else train_idx
    history, best_epoch = _train(model, rs, train_idx, eval_samples, chunk=chunk, batch_size=batch_size, gen=gen,
                                 dev=dev, epochs=epochs, patience=patience, lr=lr, progress=progress)
    train_time = time.perf_counter() - t0

    test_loss, test_ev = float("nan"), float("nan")
    if len(test_idx):
        test_loss = _mean_loss(model, rs, test_idx, chunk, batch_size, dev)
        test_ev = _total_ev(model, rs, test_idx, chunk, dev)
    config = {**model.config(scaling), "epochs": epochs, "patience": patience, "lr": lr,
              "batch_size": batch_size, "test_fraction": test_fraction, "val_fraction": val_fraction,
              "seed": seed, "n_samples": n, "n_sublayers": s}
    return CAEResult(model=model.cpu(), config=config, history=history, best_epoch=best_epoch,
                     train_idx=train_idx, val_idx=val_idx, test_idx=test_idx, test_loss=test_loss,
                     test_ev=test_ev, train_time_s=train_time)


def _train(model: CompressingAutoencoder, rs: Any, train_idx: np.ndarray, eval_samples: np.ndarray, *, chunk: int,
           batch_size: int, gen: torch.Generator, dev: torch.device, epochs: int, patience: int, lr: float,
           progress: bool) -> tuple[dict[str, list[float]], int]:
    """Step 4 of :func:`_fit_cae`: Adam on the scaled MSE over ``epochs`` epochs of the training texts
    ``train_idx`` (blocks and rows in ``gen``'s random order), early stopping on the loss of ``eval_samples``
    after ``patience`` epochs without improvement; the best weights are loaded back into ``model`` (left in
    eval mode). -> ``(history, best_epoch)``, history ``{"train_loss": [...], "val_loss": [...]}`` per epoch."""
    from tqdm.auto import tqdm

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best, best_epoch, best_state, waited = math.inf, -1, None, 0
    bar = tqdm(range(epochs), desc="CAE", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        tot, cnt = 0.0, 0
        for x in _batches(rs, train_idx, chunk, batch_size, gen, dev):
            xs = model.scale(x)
            loss = ((model.forward_scaled(xs) - xs) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * x.numel()
            cnt += x.numel()
        model.eval()
        val = _mean_loss(model, rs, eval_samples, chunk, batch_size, dev)
        history["train_loss"].append(tot / cnt)
        history["val_loss"].append(val)
        if val < best:
            best, best_epoch, waited = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        bar.set_postfix(train=f"{tot / cnt:.4f}", val=f"{val:.4f}", best=best_epoch)
        if waited >= patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return history, best_epoch


@torch.no_grad()
def _total_ev(model: CompressingAutoencoder, rs: Any, samples: np.ndarray, chunk: int, dev: torch.device) -> float:
    """EV of all vectors of ``rs[samples]`` pooled (about their overall mean), raw space, streamed."""
    sse, s1, s2, cnt = 0.0, None, 0.0, 0
    for block in _iter_selected(rs, samples, chunk):
        x = torch.as_tensor(block, device=dev).reshape(-1, rs.shape[-1])
        r = model(x).double()
        x = x.double()
        sse += float(((x - r) ** 2).sum())
        s1 = x.sum(0) if s1 is None else s1 + x.sum(0)
        s2 += float((x ** 2).sum())
        cnt += x.shape[0]
    sst = s2 - float((s1 ** 2).sum()) / cnt
    return 1.0 - sse / sst if sst > 0 else float("nan")


def _model_of(model: CompressingAutoencoder | CAEResult) -> CompressingAutoencoder:
    if isinstance(model, CAEResult):
        return model.model
    if isinstance(model, CompressingAutoencoder):
        return model
    raise ValueError(f"expected a CompressingAutoencoder or CAEResult; got {type(model).__name__}")


@torch.no_grad()
def _apply(model: CompressingAutoencoder, rs: Any, fn: str, chunk_samples: int | None) -> np.ndarray:
    rs_shape(rs)
    chunk_samples = check_positive_int(chunk_samples, "chunk_samples", none=True)
    n, s, d = rs.shape
    if d != model.d_model:
        raise ValueError(f"rs has d_model={d}; the CAE was trained on {model.d_model}")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for block in _iter_selected(rs, None, chunk_samples):
        x = torch.as_tensor(block, device=dev)
        out.append(getattr(model, fn)(x).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out, axis=0)


def bottleneck_trajectories(model: CompressingAutoencoder | CAEResult, rs: Any, *,
                            chunk_samples: int | None = 1024) -> np.ndarray:
    """Bottleneck coordinates of every sublayer vector: ``rs: (n_samples, n_sublayers, d_model)`` ->
    ``(n_samples, n_sublayers, d_bottle)`` (Fig 3B plots the mean over test texts)."""
    return _apply(_model_of(model), rs, "encode", chunk_samples)


def reconstruct(model: CompressingAutoencoder | CAEResult, rs: Any, *, chunk_samples: int | None = 1024
                ) -> np.ndarray:
    """The CAE's reconstruction of every sublayer vector, in raw RS units: ``rs: (n_samples, n_sublayers,
    d_model)`` -> the same shape (float32)."""
    return _apply(_model_of(model), rs, "forward", chunk_samples)


@torch.no_grad()
def explained_variance_per_sublayer_cae(model: CompressingAutoencoder | CAEResult, rs: Any, *,
                                        center: str = "sublayer", chunk_samples: int | None = 1024) -> np.ndarray:
    """Explained variance of each sublayer by the CAE reconstruction (Fig 3D), raw RS units.

    ``rs: (n_samples, n_sublayers, d_model)`` — pass the **test** texts, e.g. ``rs[result.test_idx]`` ->
    ``(n_sublayers,)``, with the definition of :func:`explained_variance_from_reconstruction` (variance about
    the sublayer's own mean; ``center="global"``: the mean of all vectors of ``rs``). Streams in chunks of
    samples with float64 sums.
    """
    m = _model_of(model)
    rs_shape(rs)
    chunk_samples = check_positive_int(chunk_samples, "chunk_samples", none=True)
    n, s, d = rs.shape
    dev = next(m.parameters()).device
    sse = torch.zeros(s, dtype=torch.float64)
    s1 = torch.zeros(s, d, dtype=torch.float64)
    s2 = torch.zeros(s, dtype=torch.float64)
    shift = None
    m.eval()
    for block in _iter_selected(rs, None, chunk_samples):
        x = torch.as_tensor(block, device=dev)
        r = m(x).double().cpu()
        x = x.double().cpu()
        if shift is None:
            shift = x.mean(dim=(0, 1))  # one shift for all sublayers (the global centre needs it)
        y = x - shift
        sse += ((x - r) ** 2).sum(dim=(0, 2))
        s1 += y.sum(0)
        s2 += (y ** 2).sum(dim=(0, 2))
    return (1.0 - sse / _sst(s2, s1, n, center)).numpy()
