"""Adaptive refinement on a hand-made label image, through a fake train function that looks the label up."""

import numpy as np
import pytest

from fractal_llm.refine.levels import (
    RefineError,
    RefinePlan,
    RefineSettings,
    LEVEL0_POINTS,
    axis_indices,
    default_levels,
    fill,
    known_verdicts,
    missed_islands,
    next_level,
    read_settings,
    refine,
    write_settings,
)

SHAPE = (101, 123)  # neither side is 2^k + 1: the last index is an extra coarse point on both axes


def disk_with_islands(islands: list[tuple[int, int, int, int]]) -> np.ndarray:
    """A disk of trainable points (radius 30) plus rectangular islands (iy0, ix0, height, width) of either
    class: an island inside the disk is a not-trainable hole."""
    y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    truth = (y - 50.3) ** 2 + (x - 45.6) ** 2 < 30.0 ** 2
    for iy, ix, h, w in islands:
        truth[iy:iy + h, ix:ix + w] = ~truth[iy, ix]
    return truth


# Islands far from the disk and each other. Every one is at least 8 pixels on each side (the coarse spacing
# at 3 levels); the ones marked "small" fit between two level-0 lines of a 4-level plan (spacing 16) on an
# axis, so they hold no level-0 point there.
BIG = [(2, 95, 9, 10), (85, 100, 12, 8), (45, 40, 8, 9)]  # the last: a hole in the disk
SMALL_AT_4 = [(2, 97, 9, 12), (83, 99, 12, 12)]  # rows 2..10 and cols 99..110 avoid multiples of 16


class FakeTrain:
    """run_points for refine: the verdict is the label; every call is logged; can stop or fail on cue."""

    def __init__(self, truth, errors=(), stop_after=None):
        self.truth, self.errors, self.stop_after = truth, set(errors), stop_after
        self.runs: list[tuple[int, int]] = []
        self.store: dict = {}  # what a runner would have written to disk, point by point

    def __call__(self, points):
        for p in points:
            if self.stop_after is not None and len(self.runs) >= self.stop_after:
                raise KeyboardInterrupt
            self.runs.append(p)
            # trainable, or diverged (counts as not trainable), as a real sweep's high LRs do
            self.store[p] = "error" if p in self.errors else ("trainable" if self.truth[p] else "diverged")
        return {p: self.store[p] for p in points}


@pytest.mark.parametrize("shape", [(2, 2), (15, 15), (16, 16), (32, 32), (33, 40), (64, 64), (101, 123),
                                   (256, 256), (512, 512), (20, 600)])
def test_default_levels_leave_level_zero_nine_points_on_the_shorter_axis(shape):
    plan = RefinePlan(shape)
    n = min(shape)
    assert plan.levels == default_levels(shape)
    assert len(axis_indices(n, 0, plan.levels)) >= min(LEVEL0_POINTS, n)
    if 2 ** (plan.levels + 1) < n - 1:
        assert len(axis_indices(n, 0, plan.levels + 1)) < LEVEL0_POINTS  # one more level would leave fewer
    assert {(32, 32): 2, (64, 64): 3, (256, 256): 5, (512, 512): 6}.get(shape, plan.levels) == plan.levels


def test_axis_indices_keep_both_ends():
    assert axis_indices(101, 0, 3).tolist() == list(range(0, 97, 8)) + [100]
    assert axis_indices(17, 0, 2).tolist() == [0, 4, 8, 12, 16]
    assert axis_indices(17, 2, 2).tolist() == list(range(17))


@pytest.mark.parametrize("margin", [1, 2])
def test_exact_map_when_no_island_is_smaller_than_the_coarse_spacing(margin):
    truth = disk_with_islands(BIG)
    plan = RefinePlan(SHAPE, levels=3, margin=margin)
    train = FakeTrain(truth)
    known = refine(plan, train)
    result = fill(plan, known)
    assert not result.undecided.any()
    np.testing.assert_array_equal(result.labels, truth)
    assert missed_islands(truth, result.labels) == []
    assert len(train.runs) == len(set(train.runs)) == len(known)
    assert len(known) < 0.6 * truth.size  # it did not just run the grid
    # every pixel is run or inferred, never both
    run = np.zeros(SHAPE, dtype=bool)
    run[tuple(np.array(list(known)).T)] = True
    np.testing.assert_array_equal(result.inferred, ~run)


def test_missed_islands_are_reported_one_by_one():
    truth = disk_with_islands(BIG[2:] + SMALL_AT_4)
    plan = RefinePlan(SHAPE, levels=4, margin=1)
    result = fill(plan, refine(plan, FakeTrain(truth)))
    islands = missed_islands(truth, result.labels)
    assert [(i.trainable, i.pixels, i.bbox) for i in islands] == [
        (True, 144, (83, 99, 94, 110)),
        (True, 108, (2, 97, 10, 108)),
    ]
    wrong = result.labels != truth
    assert wrong.sum() == 144 + 108  # the disk and its hole are exact: the islands are the only loss


def test_margin_zero_can_lose_what_margin_one_finds():
    truth = disk_with_islands(BIG)
    missed = {}
    for margin in (0, 1):
        plan = RefinePlan(SHAPE, levels=5, margin=margin)
        missed[margin] = missed_islands(truth, fill(plan, refine(plan, FakeTrain(truth))).labels)
    assert sum(i.pixels for i in missed[0]) > sum(i.pixels for i in missed[1])


def test_resume_after_interruption_runs_no_point_twice():
    truth = disk_with_islands(BIG)
    plan = RefinePlan(SHAPE, levels=3, margin=1)
    full = FakeTrain(truth)
    expected = refine(plan, full)
    assert next_level(plan, expected) is None  # all done: nothing left at any level
    first = FakeTrain(truth, stop_after=len(full.runs) // 2)  # stops mid-level
    with pytest.raises(KeyboardInterrupt):
        refine(plan, first)
    stopped = next_level(plan, first.store)
    assert 0 < stopped.level <= 3
    assert not set(stopped.points) & set(first.runs)  # the step is exactly what the interruption left
    level0 = next_level(plan, {})
    assert level0.level == 0 and len(level0.points) == 14 * 17
    assert full.runs[:len(level0.points)] == level0.points  # 0, 8, .., 96, 100 x 0, 8, .., 120, 122
    assert next_level(plan, {p: expected[p] for p in level0.points[:-1]}) == (0, level0.points[-1:])
    assert next_level(plan, {p: expected[p] for p in level0.points}).level == 1
    second = FakeTrain(truth)
    levels_run = []
    known = refine(plan, second, known=first.store, on_level=lambda k, n: levels_run.append(k))
    assert levels_run[0] == stopped.level and second.runs[:len(stopped.points)] == stopped.points
    assert not set(first.runs) & set(second.runs)
    assert sorted(first.runs + second.runs) == sorted(full.runs)
    assert known == expected
    assert next_level(plan, known) is None


def test_error_points_are_retried_by_the_next_call():
    truth = disk_with_islands(BIG)
    plan = RefinePlan(SHAPE, levels=3, margin=1)
    clean = refine(plan, FakeTrain(truth))
    broken = [(0, 0), (48, 40), sorted(clean)[len(clean) // 2]]  # a corner, a coarse point, a fine one
    first = FakeTrain(truth, errors=broken)
    known = refine(plan, first)
    assert all(known[p] == "error" for p in broken)
    assert next_level(plan, known) == (0, [(0, 0), (48, 40)])  # the level-0 errors are the step again
    assert sorted(next_level(plan, known, start=1).points) == sorted(set(broken) - {(0, 0), (48, 40)})
    partial = fill(plan, known)
    assert not partial.labels[0, 0] and partial.undecided[0, 0]  # no class, not guessed
    second = FakeTrain(truth)
    final = refine(plan, second, known=known)
    assert set(broken) <= set(second.runs)
    assert not set(second.runs) & (set(first.runs) - set(broken))
    np.testing.assert_array_equal(fill(plan, final).labels, truth)


def test_bad_input_is_named():
    with pytest.raises(RefineError, match="levels=9"):
        RefinePlan((65, 65), levels=9)
    with pytest.raises(RefineError, match="margin=-1"):
        RefinePlan((65, 65), levels=3, margin=-1)
    with pytest.raises(RefineError, match="shape"):
        RefinePlan((1, 65), levels=3)
    plan = RefinePlan((65, 65), levels=3)
    with pytest.raises(RefineError, match="'nan'.*allowed verdicts are trainable"):
        next_level(plan, {(0, 0): "nan"})
    with pytest.raises(RefineError, match=r"\(65, 0\)"):
        fill(plan, {(65, 0): "trainable"})
    with pytest.raises(RefineError, match=r"\(0.5, 1\).*integer"):
        next_level(plan, {(0.5, 1): "trainable"})
    with pytest.raises(RefineError, match="start=5"):
        next_level(plan, {}, start=5)

    def bad_run(points):
        return {p: "missing" for p in points}

    with pytest.raises(RefineError, match="'missing'"):
        refine(plan, bad_run)


def test_known_verdicts_is_what_refinement_knows_of_a_verdict_map():
    verdicts = np.array([["trainable", "missing", "error"], ["pending", "diverged", None]], dtype=object)
    assert known_verdicts(verdicts) == {(0, 0): "trainable", (0, 2): "error", (1, 1): "diverged"}


def test_settings_have_one_stored_form_for_wandb_descriptions_and_local_directories(tmp_path):
    level_sweep = RefineSettings(levels=3, margin=1, lattice="my map", level=2)
    description = f"level 2 of 3 (40 points) of my map\n{level_sweep.to_text()}"
    assert RefineSettings.from_text(description) == level_sweep
    # the line level sweeps created before this form still reads
    old = "level 0 of 2 (25 points) of disk\nfractal-llm refine: level=0 levels=2 margin=1 lattice=disk"
    assert RefineSettings.from_text(old) == RefineSettings(2, 1, "disk", 0)
    assert RefineSettings.from_text("a sweep someone wrote") is None
    local = RefineSettings(levels=4, margin=2, lattice="disk")
    write_settings(tmp_path, local)
    assert read_settings(tmp_path) == local and "level=" not in local.to_text()
    assert read_settings(tmp_path / "nowhere") is None
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "refinement.yaml").write_text("levels: 3\nmargin: 1\n")  # what adaptive runs wrote before
    assert read_settings(legacy) == RefineSettings(3, 1, "legacy")
