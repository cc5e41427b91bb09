"""The same architecture without training: the reference that tells what a claim owes to learning.

One implementation, used by every chapter (the claims' random-init reference, chapter 7's "learned"
contrasts, the attractor measures):

- ``"default"``: transformers' own initialisation (``from_config`` under ``torch.manual_seed(seed)``:
  normal weights of ``initializer_range``, norms at one);
- ``"matched"``: every weight tensor drawn i.i.d. normal with the trained tensor's own mean and standard
  deviation (embeddings, projections and norm weights alike). The stream is never rescaled: a rescaled
  stream would reproduce magnitude and velocity trends by construction, matched weights do not;
- ``"permuted"``: every weight tensor's trained entries randomly permuted (the trained values and scale,
  no learned arrangement).

:func:`random_init_model` builds such a model from a trained one; :data:`KINDS` lists the kinds. Several
seeds of each are the reference (``SEEDS`` by default): a claim that holds at random init as well is
reported as such.
"""

from __future__ import annotations

import torch

__all__ = ["KINDS", "SEEDS", "DESCRIPTIONS", "random_init_model", "uninitialised_model", "check_kind", "run_model"]

KINDS = ("default", "matched", "permuted")
#: The reference seeds every chapter uses unless told otherwise (>= 3, so that a seed's luck shows).
SEEDS = (0, 1, 2)
DESCRIPTIONS = {
    "default": "random init (transformers' default)",
    "matched": "random init (each weight tensor at the trained tensor's mean and sd)",
    "permuted": "trained weights, entries permuted within each tensor",
}


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`; a one-line error otherwise."""
    if kind not in KINDS:
        raise ValueError(f"random-init kind must be one of {KINDS}; got {kind!r}")
    return kind


def random_init_model(model: torch.nn.Module, kind: str = "default", seed: int = 0) -> torch.nn.Module:
    """A model with ``model``'s architecture and config, not trained: ``kind`` (:data:`KINDS`) with ``seed``.

    The result has ``model``'s dtype and device, is in eval mode with gradients off, and shares no storage with
    ``model`` (which is left unchanged). Tied weights stay tied (each tensor is drawn once).
    """
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    check_kind(kind)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    param = next(model.parameters())
    if not param.dtype.is_floating_point:
        raise ValueError(f"random init needs a model with floating-point weights; this one holds {param.dtype} "
                         "(a quantised model): load it unquantised")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if kind == "default":
            rand = AutoModelForCausalLM.from_config(model.config, dtype=param.dtype)
        else:  # every weight is drawn below: transformers' own init would be thrown away (a third of the time)
            rand = uninitialised_model(model.config, param.dtype)
    rand.to(param.device)
    if kind != "default":
        trained = dict(model.named_parameters())
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        with torch.no_grad():
            for name, p in rand.named_parameters():
                src = trained.get(name)
                if src is None or src.shape != p.shape:
                    raise ValueError(f"parameter {name!r} of the random-init model has no trained counterpart of "
                                     "the same shape; the model's config does not match its weights")
                t = src.detach().to("cpu", torch.float32)
                if kind == "matched":
                    sd, mean = (float(v) for v in torch.std_mean(t.double(), unbiased=False))
                    new = torch.randn(t.shape, generator=gen) * sd + mean
                else:  # permuted
                    flat = t.reshape(-1)
                    new = flat[torch.randperm(flat.numel(), generator=gen)].reshape(t.shape)
                p.copy_(new.to(p.dtype))
    rand.eval().requires_grad_(False)
    rand.config.use_cache = False
    return rand


def uninitialised_model(config, dtype: torch.dtype) -> torch.nn.Module:
    """A causal LM of ``config`` in ``dtype`` on the CPU, its weights allocated but not initialised (every one is
    about to be overwritten) and its tied weights tied."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    with _no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()
    return model


def _no_init_weights():
    """transformers' context that builds a model without initialising its weights (its home moved in 5.0)."""
    try:
        from transformers.initialization import no_init_weights  # noqa: PLC0415
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights  # noqa: PLC0415
    return no_init_weights()


def run_model(model: torch.nn.Module, run: str) -> torch.nn.Module:
    """The model of a named run: ``"trained"`` is ``model`` itself, ``"<kind>:<seed>"`` (e.g. ``"default:0"``) its
    :func:`random_init_model` of that kind and seed."""
    if run == "trained":
        return model
    kind, _, seed = run.partition(":")
    if not seed.isdigit():
        raise ValueError(f"run {run!r} is neither 'trained' nor a random init '<kind>:<seed>' (e.g. 'default:0')")
    return random_init_model(model, kind, int(seed))
