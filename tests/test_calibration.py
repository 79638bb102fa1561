"""The estimators on borders of known dimension: the stored calibration table, and the true D a raw D allows."""

import math

import numpy as np
import pytest

from fractal_llm.report import calibration, fractal, robustness
from fractal_llm.report.fractal import edge_mask

# The table is re-measured with the same shapes and seeds, so it matches to its rounding (0.001) unless the
# estimators or the shapes change. 0.005 leaves room for a pixel that flips with another FFT or numpy build
# (one pixel moves one reading by about 0.01, a 16-seed mean by under 0.001) and is a tenth of the
# smallest seed sd of a rough shape (0.044).
TOLERANCE = 0.005
TESTED = (64, 128)  # 256² is in the table (scripts/calibrate_estimator.py); these two keep the test ~1 s
KEYS = ("ours", "ours_sd", "smallest_box", "smallest_box_sd", "paper", "paper_sd")


def stored(resolution: int) -> list[dict]:
    return [row for row in calibration.TABLE if row["resolution"] == resolution]


def drift(measured: list[dict], table: list[dict]) -> list[str]:
    rows = {(row["shape"], row["resolution"]): row for row in table}
    return [f"{row['shape']} {row['resolution']}² {key}: {row[key]} measured, {rows[row['shape'], row['resolution']][key]} "
            f"in the table" for row in measured for key in KEYS
            if abs(row[key] - rows[row["shape"], row["resolution"]][key]) > TOLERANCE]


def test_the_table_covers_every_shape_at_every_resolution():
    assert {(row["shape"], row["resolution"]) for row in calibration.TABLE} == {
        (shape.name, n) for shape in calibration.SHAPES for n in calibration.RESOLUTIONS}
    assert all(row["seeds"] == len(calibration.SEEDS) for row in calibration.TABLE)


@pytest.mark.parametrize("resolution", TESTED)
def test_the_estimators_read_their_table(resolution):
    measured = [calibration.measure(shape, resolution) for shape in calibration.SHAPES]
    assert drift(measured, stored(resolution)) == []


def test_a_changed_fit_rule_is_caught_as_drift(monkeypatch):
    """The check above can fail: boxes up to half the map (not a quarter) move the 64² readings off the table."""
    monkeypatch.setattr(fractal, "MIN_BOXES_PER_SIDE", 2)
    measured = [calibration.measure(shape, 64) for shape in calibration.SHAPES]
    assert drift(measured, stored(64))


def test_the_table_says_what_the_estimator_does_on_rough_borders():
    """The finding the calibration exists for: right on a disc, low on rough borders, lower at the smallest box."""
    rows = {(row["shape"], row["resolution"]): row for row in calibration.TABLE}
    for n in calibration.RESOLUTIONS:
        assert rows["disc", n]["ours"] == pytest.approx(1.0, abs=0.02)
        assert rows["fbm_H0.5", n]["ours"] < 1.4  # a true 1.5
        assert rows["koch", n]["smallest_box"] < rows["koch", n]["ours"] < calibration.KOCH_D
        fields = [rows[shape.name, n]["ours"] for shape in calibration.SHAPES if shape.name != "koch"]
        assert fields == sorted(fields)  # the reading rises with the true D (koch and fbm_H0.74 share 1.26)


@pytest.mark.parametrize("name", [shape.name for shape in calibration.SHAPES])
def test_shapes_are_deterministic_and_have_both_classes(name):
    shape = next(s for s in calibration.SHAPES if s.name == name)
    a, b, other = shape.render(64, 3), shape.render(64, 3), shape.render(64, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, other)  # the seed moves, turns or redraws it
    assert edge_mask(a).any() and set(np.unique(a)) == {0.0, 1.0}


def test_fbm_level_sets_get_rougher_as_hurst_falls():
    edges = [np.count_nonzero(edge_mask(calibration.fbm_level_set(128, 0, h))) for h in (0.9, 0.5, 0.1)]
    assert edges[0] < edges[1] < edges[2]


# ---------------------------------------------------------------------------------------------- the inverse


def test_a_disc_reading_calibrates_to_a_curve_and_noise_to_the_plane():
    smooth = calibration.calibrated_range(1.0, 64)
    assert smooth["lo"] == 1.0 and smooth["hi"] < 1.15 and smooth["resolution"] == 64
    assert calibration.calibrated_range(1.998, 128)["lo"] > 1.95
    assert calibration.calibrated_range(0.9, 64) == {**smooth, "raw": 0.9, "lo": 1.0, "hi": 1.0}  # below every band


def test_a_low_raw_d_on_a_rough_border_allows_its_true_d():
    """A true 1.5 reads about 1.3 at 64²: the range for 1.3 holds 1.5 and not the raw 1.3's face value of 1.2."""
    calibrated = calibration.calibrated_range(1.3, 64)
    assert calibrated["lo"] <= 1.5 <= calibrated["hi"]
    assert calibrated["lo"] > 1.2


def test_the_range_is_every_true_d_whose_band_holds_the_raw_d():
    """Against a table of two rows the range is the straight-line inverse, worked out by hand."""
    table = [{"shape": "a", "true_d": 1.0, "resolution": 64, "ours": 1.0, "ours_sd": 0.05},
             {"shape": "b", "true_d": 2.0, "resolution": 64, "ours": 1.5, "ours_sd": 0.05}]
    # bands: lo(D) = 0.9 + 0.5 (D - 1), hi(D) = 1.1 + 0.5 (D - 1); raw 1.2 -> D from 1.2 to 1.6
    calibrated = calibration.calibrated_range(1.2, 70, table=table)
    assert (calibrated["lo"], calibrated["hi"]) == pytest.approx((1.2, 1.6), abs=0.002)


def test_the_nearest_calibrated_resolution_is_taken_in_octaves():
    assert [calibration.nearest_resolution(n) for n in (24, 64, 90, 91, 128, 200, 4096)] == [64, 64, 64, 128, 128,
                                                                                            256, 256]


def test_a_nan_raw_d_has_no_range_and_a_bad_method_is_refused():
    assert calibration.calibrated_range(math.nan, 64)["lo"] is None
    with pytest.raises(ValueError, match="method='box'"):
        calibration.calibrated_range(1.2, 64, method="box")


def test_robustness_gives_the_calibrated_range_beside_the_raw_d(tmp_path):
    """report.json robustness.dimension_calibrated and its report.md line, on a rough 64² map of known D."""
    from tests.test_robustness import ratio_grid  # a real grid of run records

    grid = ratio_grid(64)
    grid.labels = calibration.fbm_level_set(64, 0, 0.5)
    rob = robustness.robustness_of(grid)
    calibrated = rob["dimension_calibrated"]
    assert calibrated["raw"] == pytest.approx(rob["noise_floor"]["map"]["dimension"])
    assert calibrated["resolution"] == 64 and calibrated["lo"] <= 1.5 <= calibrated["hi"]
    smooth = rob["noise_floor"]["smooth"]["dimension_calibrated"]
    assert smooth["lo"] == 1.0 and smooth["hi"] < 1.25
    text = "\n".join(robustness.robustness_markdown({"robustness": rob}))
    assert f"true D {calibrated['lo']:.2f}–{calibrated['hi']:.2f}" in text


def test_a_too_coarse_map_gets_no_calibrated_range():
    from tests.test_robustness import ratio_grid

    rob = robustness.robustness_of(ratio_grid(16))
    assert rob["dimension_calibrated"]["lo"] is None and "too coarse" in rob["dimension_calibrated"]["note"]
    assert "no calibrated range (the raw D is too coarse" in "\n".join(robustness.robustness_markdown({"robustness": rob}))
