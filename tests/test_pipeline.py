"""pipeline.shard_texts: how many texts one activation shard holds."""

from types import SimpleNamespace

import pytest

from transformer_dynamics.pipeline import SHARD_BYTES, shard_texts


def _stream(n_sublayers, d_model):
    """The two facts of a ResidualModel that size a shard."""
    return SimpleNamespace(n_sublayers=n_sublayers, d_model=d_model)


def test_shards_are_sized_by_bytes_not_texts():
    assert shard_texts(_stream(60, 576)) == SHARD_BYTES // (60 * 576 * 4) == 1941  # SmolLM2-135M
    assert shard_texts(_stream(64, 4096)) == 256                                  # Llama 3.1 8B: 1 MiB per text
    assert shard_texts(_stream(160, 8192), shard_bytes=1) == 1                    # never zero
    with pytest.raises(ValueError, match="shard_bytes"):
        shard_texts(_stream(60, 576), shard_bytes=0)
