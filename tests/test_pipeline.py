"""pipeline.model_list: the MODELS parameter of every chapter."""

import pytest

from transformer_dynamics.pipeline import model_list


def test_model_list_accepts_one_name_or_several():
    assert model_list("smollm2-135m") == ["smollm2-135m"]
    assert model_list(["smollm2-135m", "gemma-3-270m", "smollm2-135m"]) == ["smollm2-135m", "gemma-3-270m"]
    with pytest.raises(ValueError, match="MODELS is empty"):
        model_list([])
