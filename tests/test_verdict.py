import math

import numpy as np
import pytest

from fractal_llm.verdict import convergence_score, normalised_losses, summarize_losses


def test_trainable_curve():
    s = summarize_losses([4.0, 3.0, 2.0, 1.0], planned_steps=4, window=2)
    assert s["verdict"] == "trainable" and s["trainable"] and s["stable"]
    assert s["loss_mean_last_k"] == pytest.approx(1.5)
    assert s["loss_ratio"] == pytest.approx(1.5 / 4.0)
    assert s["score"] == pytest.approx(-(1 + 0.75 + 0.5 + 0.25))
    assert s["diverged_at_step"] is None and s["steps"] == 4


def test_not_trainable_curve_gets_positive_score():
    s = summarize_losses([1.0, 1.5, 2.0, 2.0], planned_steps=4, window=2)
    assert s["verdict"] == "not_trainable" and s["stable"] and not s["trainable"]
    assert s["score"] == pytest.approx(1 + 1 / 1.5 + 0.5 + 0.5)


def test_ratio_exactly_at_threshold_is_not_trainable():
    s = summarize_losses([2.0, 2.0, 2.0], planned_steps=3, window=2, threshold=1.0)
    assert s["loss_ratio"] == 1.0
    assert s["verdict"] == "not_trainable"
    s = summarize_losses([2.0, 1.0, 1.0], planned_steps=3, window=2, threshold=0.5)
    assert s["loss_ratio"] == 0.5 and s["verdict"] == "not_trainable"


def test_nan_at_step_zero_diverges():
    s = summarize_losses([float("nan")], planned_steps=10)
    assert s["verdict"] == "diverged" and s["diverged_at_step"] == 0
    assert s["loss_first"] is None and s["loss_ratio"] is None
    assert math.isfinite(s["score"]) and s["score"] > 0


def test_inf_mid_run_diverges_and_pads_score():
    s = summarize_losses([2.0, 4.0, float("inf")], planned_steps=5)
    assert s["verdict"] == "diverged" and s["diverged_at_step"] == 2 and not s["stable"]
    # u = [1, 2, cap, cap, cap] -> sum(1/u) = 1 + 0.5 + 3e-6
    assert s["score"] == pytest.approx(1.5 + 3e-6)


def test_window_longer_than_run_uses_all_steps():
    s = summarize_losses([3.0, 2.0, 1.0], planned_steps=3, window=20)
    assert s["loss_mean_last_k"] == pytest.approx(2.0)
    assert s["verdict"] == "trainable"


def test_run_that_stopped_early_without_divergence_is_refused():
    with pytest.raises(ValueError, match="planned"):
        summarize_losses([3.0, 2.0], planned_steps=5)


def test_normalised_losses_never_nan():
    u = normalised_losses([1.0, float("inf"), float("nan"), 1e9], planned_steps=6)
    assert np.all(np.isfinite(u))
    assert list(u) == [1.0, 1e6, 1e6, 1e6, 1e6, 1e6]


def test_score_sign_is_class():
    curve = [2.0, 1.0, 0.5]
    assert convergence_score(curve, 3, trainable=True) < 0
    assert convergence_score(curve, 3, trainable=False) > 0
