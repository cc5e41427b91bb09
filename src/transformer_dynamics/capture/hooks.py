"""The recording hooks: one context manager (:func:`recording`) puts them on a model's residual stream for one
forward and takes them off after it.

The points are :mod:`transformer_dynamics.residual`'s (``2L + 1`` of them, TransformerLens's names): point ``p < 2L``
is the input of ``rm.norms[p]`` (a forward pre-hook reads it), point ``2L`` the last decoder layer's output (a
forward hook reads it). An edit of the stream entering decoder layer ``l`` is a pre-hook on that layer, whose input
feeds both its norm and its residual connection, so the recording at point ``2l`` sees the edited vector.

Every forward gets hooks of its own, made for its rows, positions and output array and removed when it ends:
nothing is shared between a hook and the loop that runs the forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from ..residual import ResidualModel

__all__ = ["LayerInputEdit", "StopForward", "forward_until_stop", "forwards_replaced", "recording"]

#: An edit of the vectors entering a decoder layer at the recorded positions: ``h: (B, d_model)`` -> ``(B, d_model)``.
LayerInputEdit = Callable[[torch.Tensor], torch.Tensor]


class StopForward(Exception):
    """Raised once the last point asked for is recorded: nothing after it is needed."""


@contextmanager
def recording(rm: ResidualModel, rows: torch.Tensor, positions: torch.Tensor, out: torch.Tensor, *,
              edit: tuple[int, LayerInputEdit] | None = None) -> Iterator[torch.Tensor]:
    """For the duration (one forward of ``rm.base``), record the residual stream at ``(rows, positions)``:
    ``out[:, p] = x_p[rows, positions]`` for every point ``p < P``, then raise :class:`StopForward` (run the forward
    with :func:`forward_until_stop`). Yields ``out``.

    rows, positions: ``(B,)`` long, the batch row and token position of each recorded vector; out: ``(B, P, D)``
    float, ``1 <= P <= 2L + 1`` (``P = 2L + 1``: the stack's output too), written in its dtype on its device.
    edit: ``(layer, fn)``: before decoder layer ``layer`` runs, ``x[rows, positions]`` at its input is replaced by
    ``fn(x[rows, positions]) -> (B, D)``.
    """
    n_points = out.shape[1]
    if not 1 <= n_points <= rm.n_points:
        raise ValueError(f"out must hold 1 to {rm.n_points} points (2L + 1), got {n_points}")
    last = n_points - 1

    def write(p: int, x: torch.Tensor) -> None:
        out[:, p] = x[rows.to(x.device), positions.to(x.device)].to(out.device, out.dtype)
        if p == last:
            raise StopForward

    def before(p: int):
        def hook(module, args, kwargs):
            write(p, args[0] if args else next(iter(kwargs.values())))
        return hook

    def after(module, args, kwargs, result):
        write(rm.n_sublayers, result[0] if isinstance(result, tuple) else result)

    def edit_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        r, t = rows.to(hidden.device), positions.to(hidden.device)
        hidden = hidden.clone()
        hidden[r, t] = edit[1](hidden[r, t]).to(hidden.device, hidden.dtype)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handles = []
    try:
        if edit is not None:
            handles.append(rm.layers[edit[0]].register_forward_pre_hook(edit_hook, with_kwargs=True))
        for p in range(min(n_points, rm.n_sublayers)):
            handles.append(rm.norms[p].register_forward_pre_hook(before(p), with_kwargs=True))
        if n_points == rm.n_points:
            handles.append(rm.layers[-1].register_forward_hook(after, with_kwargs=True))
        yield out
    finally:
        for h in handles:
            h.remove()


def forward_until_stop(rm: ResidualModel, **inputs: torch.Tensor) -> None:
    """Run ``rm``'s decoder stack on ``inputs`` (no KV cache, no LM head) until :func:`recording` raises
    :class:`StopForward`; a forward that ends without reaching it is a RuntimeError."""
    try:
        rm.base(**inputs, use_cache=False)
    except StopForward:
        return
    raise RuntimeError("the recording hooks did not reach the last point asked for")  # pragma: no cover


@contextmanager
def forwards_replaced(modules, forward_of: Callable[[torch.nn.Module], Callable]) -> Iterator[None]:
    """For the duration, each of ``modules`` runs ``forward_of(module)`` as its ``forward`` (an instance attribute,
    so hooks still run around it); after, each gets back the instance ``forward`` it had, or none (its class's)."""
    modules = list(modules)
    saved = [m.__dict__.get("forward") for m in modules]
    try:
        for m in modules:
            m.forward = forward_of(m)
        yield
    finally:
        for m, before in zip(modules, saved):
            if before is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = before
