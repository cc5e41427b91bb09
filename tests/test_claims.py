"""The claim registry: every claim declared once and complete, its statistics runnable on curves."""

from pathlib import Path

import numpy as np
import pytest

from transformer_dynamics import claims, effects

ROOT = Path(__file__).resolve().parents[1]


def test_registry_complete():
    assert set(claims.CONTRIBUTIONS) == {1, 2, 3, 4, 5, 6}   # 6: the sequel's claims, beyond the paper
    assert {c.contribution for c in claims.REGISTRY.values()} == {1, 2, 3, 4, 5, 6}
    assert all(c.origin == "sequel" for c in claims.REGISTRY.values() if c.contribution == 6)
    for key, c in claims.REGISTRY.items():
        assert c.key == key and c.quote and c.description and c.why and c.figure
        assert c.source in claims.SOURCES, key
        assert c.test in (">", "<"), key
        assert np.isfinite(c.threshold), key
        assert c.headline in c.reading_names, key
        assert len(set(c.reading_names)) == len(c.reading_names), key
        assert (ROOT / "notebooks" / f"{c.chapter}.py").exists(), (key, c.chapter)
        if c.premise is not None:
            assert c.premise in claims.REGISTRY and c.premise != key
            assert set(c.reading_names) <= set(claims.get(c.premise).reading_names)
        for r in c.readings:
            assert r.keys and callable(r.statistic), (key, r.name)


def test_get_names_the_registry_and_reading_errors():
    with pytest.raises(KeyError, match="not a claim of the registry"):
        claims.get("no_such_claim")
    with pytest.raises(ValueError, match="has no reading"):
        claims.get("r_early").reading("nope")
    assert claims.get("r_early").reading().name == "first_each_kind"


def _curves(B, keys, rng):
    """Random curves of the shapes the statistics read (T transitions, L sublayers)."""
    L, T = 24, 23
    shape = {"r": T, "cos": T, "ccos": T, "vel": T, "vel_nomassive": T, "mag": L, "mag_nomassive": L, "sign": L,
             "density": L, "density_all": L, "pcs": L, "pcs_own": L, "pca_ev": L, "cae_angle": L - 2,
             "cae_dist": L - 1, "cae_ev": L, "recovery": 5, "rel_mse": 5, "end_spread": 5, "end_far": 5,
             "rotation_dominance": L, "departure_update": L, "antisymmetric_share_update": L, "r_b": T,
             "mag_b": L}
    out = {}
    for k in keys:
        head = k.split(":")[0]
        n = T if head in ("mi", "mi_a") else shape.get(head, None)
        out[k] = rng.normal(size=(B, n)) if n else rng.normal(size=(B,))
    return out


@pytest.mark.parametrize("key", list(claims.REGISTRY))
def test_every_reading_gives_one_number_per_resample(key):
    rng = np.random.default_rng(0)
    for r in claims.get(key).readings:
        out = r(_curves(7, r.keys, rng))
        assert out.shape == (7,), (key, r.name)


def test_effects_on_known_curves():
    y = np.arange(12.0)[None]
    assert effects.contrast(y)[0] == pytest.approx(8.0)                    # mean(8..11) - mean(0..3)
    assert effects.kind_difference(np.array([[2.0, 1, 2, 1, 2]]))[0] == 1.0   # within (even t) above cross
    assert effects.kind_difference(np.array([[2.0, 1, 2, 1]]), sign=-1)[0] == -1.0
    assert effects.first_defined(np.array([[np.nan, 3.0, 1.0]]))[0] == 3.0
    assert effects.first_each_kind(np.array([[np.nan, 0.9, 0.85, 0.95]]))[0] == 0.85
    assert np.isnan(effects.first_defined(np.full((1, 3), np.nan))[0])
    flat_then_steep = np.r_[np.zeros(6), np.zeros(6), np.arange(1, 7.0)][None]
    assert effects.steepest_third_margin(flat_then_steep)[0] > 0
    assert effects.steepest_third_margin(flat_then_steep[:, ::-1] * -1)[0] < 0
    mi = np.r_[1.0, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8][None]   # 70 % drop, slow rise
    assert effects.early_drop(mi)[0] == pytest.approx(0.7)
    assert effects.early_drop(np.linspace(1, 0.95, 12)[None])[0] < claims.SHARP_DROP     # a 5 % decline is not sharp
    assert np.isnan(effects.early_drop(np.r_[np.nan, mi[0, 1:]][None])[0])      # no start, no decline from it
    # drop into t = 1 (cross) of 0.7 against the largest within-layer "drop", a rise of 0.05
    assert effects.drop_at_cross_margin(mi)[0] == pytest.approx(0.75)
    a = np.arange(24.0)[None]
    assert effects.early_difference_correlation(a ** 2, -(a ** 2))[0] == pytest.approx(-1.0)
    assert effects.middle_minus_ends(np.array([[2.0, 1, 1, 1, 2]]))[0] == pytest.approx(-1.0)
    assert effects.depth_contrast(np.r_[np.ones(4), np.zeros(4), np.zeros(4)][None])[0] == pytest.approx(1.0)


def test_claims_of_and_readings():
    assert "r_early" in claims.claims_of(source="rs", chapter="02_activation_statistics")
    assert all(claims.get(k).source == "cae" for k in claims.claims_of(source="cae"))
    with pytest.raises(ValueError, match="source must be one of"):
        claims.claims_of(source="nope")
    assert claims.readings("r_early", headline_only=True) == [("r_early", "first_each_kind")]
