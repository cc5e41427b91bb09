"""pipeline.model_list: the MODELS parameter of every chapter."""

import pytest

from transformer_dynamics.pipeline import SHARD_BYTES, model_list, shard_texts


def test_model_list_accepts_one_name_or_several():
    assert model_list("smollm2-135m") == ["smollm2-135m"]
    assert model_list(["smollm2-135m", "gemma-3-270m", "smollm2-135m"]) == ["smollm2-135m", "gemma-3-270m"]
    with pytest.raises(ValueError, match="MODELS is empty"):
        model_list([])


def test_shards_are_sized_by_bytes_not_texts():
    assert shard_texts(60, 576) == SHARD_BYTES // (60 * 576 * 4) == 1941  # SmolLM2-135M
    assert shard_texts(64, 4096) == 256                                  # Llama 3.1 8B: 1 MiB per text
    assert shard_texts(160, 8192, shard_bytes=1) == 1                    # never zero
