"""Dynamics or noise: does a map's boundary, and its dimension, survive changes that should not matter?

Every report carries two checks that need no new runs (report.json `robustness`, a section of report.md):
- thresholds: the map re-labelled from the records at loss-ratio thresholds 0.9, 1.0 and 1.1 (a point is
  trainable at threshold t when its run was stable and its loss ratio, mean of the last K losses over the
  first, is < t), with the pixels that change against the map and the dimension of each boundary. A boundary
  that is the level set of a smooth loss ratio moves smoothly with t; a fractal one keeps its D.
- noise floor: D of the same map with its labels shuffled (SHUFFLE_SEED; pure noise: D near 2 at 64^2) and of
  a smooth level set at the same resolution (a disc: D near 1). A map's D near the shuffled one says noise.
- calibrated range (`dimension_calibrated`): the true D values consistent with the map's raw D at its
  resolution, from the estimator's readings on borders of known D (calibration.py, docs/calibration.md): box
  counting reads low on rough borders (a true 1.5 reads about 1.3 at 64^2).
Adaptive maps: inferred pixels have no record; at each threshold they are filled again from the re-labelled
runs (threshold_labels), so a flipped corner never draws a boundary around itself.

The data-order seed, budget and window checks need new runs: scripts/study_robustness.py (flip_share and
labels_from_records below are its measures).
"""

from __future__ import annotations

import math

import numpy as np

from fractal_llm.report.calibration import calibrated_range, calibrated_sentence
from fractal_llm.report.fractal import estimate_dimension, paper_dimension, pooled_paper_dimension
from fractal_llm.refine.levels import RefinePlan, fill
from fractal_llm.verdict import VERDICTS, summarize_losses

THRESHOLDS = (0.9, 1.0, 1.1)
SHUFFLE_SEED = 0
DISC_RADIUS = 0.35  # of the short side: a smooth closed curve well inside the map
PAPER_MIN_SIDE = 21  # fractal.paper_dimension needs an edge image >= 20 pixels on its short side


def trainable_at(summary: dict, threshold: float) -> bool | None:
    """A run's class at a loss-ratio threshold: stable and loss_ratio < threshold; None for a run without a
    result (an error)."""
    if summary.get("verdict") not in ("trainable", "not_trainable", "diverged"):
        return None
    ratio = summary.get("loss_ratio")
    ratio = math.nan if ratio is None else float(ratio)
    return bool(summary.get("stable")) and math.isfinite(ratio) and ratio < threshold


def threshold_labels(grid, threshold: float) -> np.ndarray:
    """The map's labels with every run's class taken at `threshold`. An adaptive map's inferred pixels are
    filled again from the re-labelled runs (refine.fill with the map's levels and margin): a cell whose
    corners no longer agree leaves its never-run pixels undecided, never the old class."""
    labels = np.array(grid.labels, dtype=float)
    known = {}
    for i, j in zip(*np.nonzero(grid.record_index >= 0)):
        summary = grid.records[grid.record_index[i, j]].summary
        trainable = trainable_at(summary, threshold)
        if trainable is not None:
            labels[i, j] = float(trainable)
            known[(int(i), int(j))] = "trainable" if trainable else "not_trainable"
        elif summary.get("verdict") == "error":
            known[(int(i), int(j))] = "error"
    if grid.inferred is not None and grid.refinement:
        refilled = fill(RefinePlan(grid.shape, grid.refinement["levels"], grid.refinement["margin"]), known)
        labels = np.where(grid.inferred, refilled.float_labels(), labels)
    return labels


def shuffled_labels(labels: np.ndarray, seed: int = SHUFFLE_SEED) -> np.ndarray:
    """The same labels at random places (undecided NaN cells stay where they are)."""
    out = np.array(labels, dtype=float)
    decided = ~np.isnan(out)
    out[decided] = np.random.default_rng(seed).permutation(out[decided])
    return out


def smooth_labels(shape: tuple[int, int]) -> np.ndarray:
    """A disc rasterised at `shape`: a smooth level set, the estimator's D = 1 reference at this resolution."""
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w]
    radius = DISC_RADIUS * min(h, w)
    return (((rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2) < radius ** 2).astype(float)


def dimensions(labels: np.ndarray) -> dict:
    """Our window-fit D (with its error bar and too_coarse) and, when the map is big enough, the paper's."""
    ours = estimate_dimension(labels)
    paper = paper_dimension(labels).dimension if min(labels.shape) >= PAPER_MIN_SIDE else None
    return {"dimension": ours.dimension, "uncertainty": ours.uncertainty, "too_coarse": ours.too_coarse,
            "edge_pixels": ours.n_edge_pixels, "paper_dimension": paper}


def dimension_calibrated(row: dict, shape: tuple[int, int]) -> dict:
    """calibration.calibrated_range of a dimensions() row on a map of `shape`: {lo, hi, raw, resolution, ...};
    lo and hi None (with a note) when the raw D is too coarse to be a measurement."""
    raw = math.nan if row["too_coarse"] or row["dimension"] is None else row["dimension"]
    out = calibrated_range(raw, min(shape))
    if row["too_coarse"]:
        out["note"] = "the raw D is too coarse to be a measurement"
    return out


def flip_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the pixels decided in both maps whose class differs."""
    both = ~np.isnan(a) & ~np.isnan(b)
    return float(np.count_nonzero(a[both] != b[both]) / both.sum()) if both.any() else math.nan


def class_counts(labels: np.ndarray) -> dict:
    return {"trainable": int(np.count_nonzero(labels == 1)), "not_trainable": int(np.count_nonzero(labels == 0)),
            "undecided": int(np.count_nonzero(np.isnan(labels)))}


def robustness_of(grid) -> dict:
    """report.json `robustness` of one map (see the module docstring)."""
    out = {"thresholds": None, "thresholds_note": "", "inferred": 0}
    if grid.records:
        rows = []
        for t in THRESHOLDS:
            labels = threshold_labels(grid, t)
            rows.append({"threshold": t, **class_counts(labels), "changed": flip_share(labels, grid.labels),
                         **dimensions(labels)})
        out["thresholds"] = rows
        out["inferred"] = int(grid.inferred.sum()) if grid.inferred is not None else 0
    else:
        out["thresholds_note"] = "no run records (paper mode): no per-point loss ratio to re-threshold"
    out["noise_floor"] = {"map": dimensions(grid.labels),
                          "shuffled": {"seed": SHUFFLE_SEED, **dimensions(shuffled_labels(grid.labels))},
                          "smooth": {"shape": f"disc of radius {DISC_RADIUS} x the short side",
                                     **dimensions(smooth_labels(grid.labels.shape))}}
    for row in out["noise_floor"].values():  # the floors' ranges show what the calibration makes of noise and a disc
        row["dimension_calibrated"] = dimension_calibrated(row, grid.labels.shape)
    out["dimension_calibrated"] = out["noise_floor"]["map"]["dimension_calibrated"]
    return out


def pooled_robustness(label_images: list[np.ndarray], threshold_images: dict[float, list[np.ndarray]]) -> dict:
    """The paper method's pooled D (fractal.pooled_paper_dimension) of a sequence's frames: at each threshold,
    shuffled and smooth. Frames below PAPER_MIN_SIDE are left out."""
    def pooled(images):
        images = [im for im in images if min(im.shape) >= PAPER_MIN_SIDE]
        return pooled_paper_dimension([paper_dimension(im) for im in images]).dimension if images else None
    return {"thresholds": [{"threshold": t, "pooled_dimension": pooled(images)}
                           for t, images in sorted(threshold_images.items())],
            "map": pooled(label_images),
            "shuffled": pooled([shuffled_labels(im) for im in label_images]),
            "smooth": pooled([smooth_labels(im.shape) for im in label_images])}


def relabel_window(records, window: int) -> dict[str, str]:
    """{record name: verdict} of the records' stored loss curves judged with another window K (no new run):
    verdict.summarize_losses on each curve, at the run's own planned steps and threshold."""
    out = {}
    for record in records:
        curve = (record.history or {}).get("train/loss")
        if record.verdict not in VERDICTS[:3] or not curve:
            continue
        config = record.config
        planned = int(config.get("num_iterations", -1))  # -1 (gpt, derived from num_tokens): a full curve's length
        out[record.name] = summarize_losses(curve, planned if planned > 0 else len(curve), window,
                                            float(config.get("trainable_loss_ratio_threshold", 1.0)))["verdict"]
    return out


# ---------------------------------------------------------------- report.md


def _num(x) -> str:
    return "–" if x is None or x != x else f"{x:.3f}"


def _d(row: dict) -> str:
    unc = "" if row.get("uncertainty") is None or row["uncertainty"] != row["uncertainty"] else f" ± {row['uncertainty']:.3f}"
    return f"{_num(row['dimension'])}{unc}{' (too coarse)' if row['too_coarse'] else ''}"


def robustness_markdown(report: dict, shown_dir=None) -> list[str]:
    """The report.md section of the report's `robustness` (robustness_of); a report.MARKDOWN_SECTIONS entry."""
    rob = report.get("robustness")
    if not rob:
        return []
    lines = ["## Dynamics or noise", ""]
    if rob["thresholds"]:
        lines += ["The map re-labelled from its records at other loss-ratio thresholds (trainable: stable and "
                  "loss ratio < t; no new runs):", "",
                  "| threshold | trainable | not trainable | undecided | pixels changed | boundary pixels | D (ours) "
                  "| D (paper method) |", "|---:|---:|---:|---:|---:|---:|---|---:|"]
        for row in rob["thresholds"]:
            lines.append(f"| {row['threshold']:g} | {row['trainable']} | {row['not_trainable']} | {row['undecided']} | "
                         f"{row['changed']:.1%} | {row['edge_pixels']} | {_d(row)} | {_num(row['paper_dimension'])} |")
        if rob["inferred"]:
            lines.append(f"\nAn adaptive map: its {rob['inferred']} inferred pixels are filled again from the "
                         "re-labelled runs at each threshold (undecided where a cell's corners no longer agree).")
    else:
        lines.append(f"Thresholds: {rob['thresholds_note']}.")
    floor = rob["noise_floor"]
    lines += ["", "Noise floor: the same estimator on pure noise and on a smooth curve at this resolution, and the "
              "true D each raw D allows (calibrated on borders of known D):", "",
              "| labels | boundary pixels | D (ours) | true D (calibrated) | D (paper method) |",
              "|---|---:|---|---|---:|"]
    for name, label in (("map", "this map"), ("shuffled", f"this map's labels shuffled (seed {floor['shuffled']['seed']})"),
                        ("smooth", f"smooth level set ({floor['smooth']['shape']})")):
        row = floor[name]
        lines.append(f"| {label} | {row['edge_pixels']} | {_d(row)} | {_range(row.get('dimension_calibrated'))} | "
                     f"{_num(row['paper_dimension'])} |")
    if rob.get("dimension_calibrated"):
        lines += ["", f"**This map's raw D {_d(floor['map'])}: {calibrated_sentence(rob['dimension_calibrated'])}.** "
                      "Box counting reads low on rough borders at these sizes; the range is every true D whose "
                      "synthetic borders read like this map."]
    return lines + [""]


def _range(calibrated: dict | None) -> str:
    return "–" if not calibrated or calibrated.get("lo") is None else f"{calibrated['lo']:.2f}–{calibrated['hi']:.2f}"
