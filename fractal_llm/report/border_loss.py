"""The loss on each side of a map's border: is it the border a practitioner meets?

A border between runs that fail a little less and runs that fail a little more is not the one that matters.
Every report (report.json `border_loss`, a section of report.md) states, for the points near the border (the
run points of the 2x2 blocks that hold both classes, fractal.edge_mask), the final loss of the trainable and
of the not-trainable ones (median and range), their first loss, and the loss of a uniform guess over the
vocabulary, ln(vocab size). On the tiny base every SFT run starts at 7.65 nats, above ln 1024 = 6.93: both
sides of that border fail.

Final loss is the verdict's own numerator: the mean of the last K losses (summary loss_mean_last_k). A
diverged point has none; it is counted apart.
"""

from __future__ import annotations

import math

import numpy as np

from fractal_llm.report.fractal import edge_mask

SIDES = ("trainable", "not_trainable")


def near_border(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: the decided pixels of the 2x2 blocks that hold both classes (fractal.edge_mask)."""
    edges = np.pad(edge_mask(labels), 1)  # (H+1, W+1): pixel (i, j) is a corner of blocks (i-1..i, j-1..j)
    near = edges[:-1, :-1] | edges[:-1, 1:] | edges[1:, :-1] | edges[1:, 1:]
    return near & ~np.isnan(np.asarray(labels, dtype=float))


def spread(values: list[float]) -> dict:
    """{n, median, min, max} of the finite values (None when there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(finite), "median": float(np.median(finite)), "min": min(finite), "max": max(finite)}


def vocab_size_of(records) -> tuple[int | None, str]:
    """(vocabulary size the runs predict over, where it came from), or (None, why not).

    repro.vocab_size when the run recorded it. Records without it: a tiny base (repro.base_model
    'tiny:<build>') whose build is the default recipe's (or the FRACTAL_LLM_TINY_RECIPE one's) has that
    recipe's vocabulary; the build's name is a hash of its whole recipe, so a match is exact.
    """
    results = [r for r in records if r.verdict in ("trainable", "not_trainable", "diverged")]
    if not results:
        return None, "no run with a result"
    config = results[0].config
    repro = config.get("repro") or {}
    if repro.get("vocab_size"):
        return int(repro["vocab_size"]), "repro.vocab_size"
    if config.get("model_family", "gpt") != "gpt":
        return None, f"the {config.get('model_family')} family predicts no tokens"
    identity = str(repro.get("base_model", ""))
    if identity.startswith("tiny:"):
        from fractal_llm.gpt.make_base import TinyRecipe, default_recipe, tiny_base_dir
        for recipe in (TinyRecipe(), default_recipe()):
            if identity == f"tiny:{tiny_base_dir(recipe, config.get('model_id', 'tiny')).name}":
                return recipe.vocab_size, f"the tiny recipe of its base model ({identity})"
    return None, f"not recorded (repro.vocab_size) and not known for base model {identity or '?'}"


def border_loss_of(grid) -> dict:
    """report.json `border_loss` of one map (see the module docstring)."""
    if not grid.records:
        return {"note": "no run records (paper mode): no per-point losses"}
    near = near_border(grid.labels) & (grid.record_index >= 0)
    summaries = [grid.records[grid.record_index[i, j]].summary for i, j in zip(*np.nonzero(near))]
    return border_loss_from(summaries, grid.records)


def border_loss_from(summaries: list[dict], records) -> dict:
    """`border_loss` of the run summaries of the points near a border (a map's, or a line's neighbours across
    its crossings), with the vocabulary of `records` (vocab_size_of)."""
    final = {side: [] for side in SIDES}
    first, diverged = [], 0
    for summary in summaries:
        if summary.get("verdict") == "diverged":
            diverged += 1
        elif summary.get("verdict") in SIDES:
            final[summary["verdict"]].append(summary.get("loss_mean_last_k"))
        first.append(summary.get("loss_first"))
    vocab, vocab_source = vocab_size_of(records)
    return {"points": len(summaries), "diverged": diverged,
            "final_loss": {side: spread(values) for side, values in final.items()},
            "first_loss": spread(first), "vocab_size": vocab, "vocab_source": vocab_source,
            "uniform_loss": math.log(vocab) if vocab else None}


# ---------------------------------------------------------------- report.md


def _loss(stats: dict) -> tuple[str, str]:
    if not stats["n"]:
        return "–", "–"
    return f"{stats['median']:.3f}", f"{stats['min']:.3f} … {stats['max']:.3f}"


def border_loss_markdown(report: dict, shown_dir=None) -> list[str]:
    """The report.md section of the report's `border_loss`; a writer.MARKDOWN_SECTIONS entry."""
    loss = report.get("border_loss")
    if not loss:
        return []
    lines = ["## The loss on each side of the border", ""]
    if "note" in loss:
        return lines + [f"{loss['note']}.", ""]
    where = loss.get("where", "the 2×2 blocks that hold both")
    lines += [f"The {loss['points']} run points next to the other class ({where}), "
              "their final loss (mean of the last K steps) against where they started and a uniform guess:", "",
              "| | points | median | range |", "|---|---:|---:|---|"]
    for side, name in (("trainable", "final loss, trainable"), ("not_trainable", "final loss, not trainable")):
        stats = loss["final_loss"][side]
        lines.append(f"| {name} | {stats['n']} | {' | '.join(_loss(stats))} |")
    if loss["diverged"]:
        lines.append(f"| diverged (no final loss) | {loss['diverged']} | | |")
    lines.append(f"| first loss, all | {loss['first_loss']['n']} | {' | '.join(_loss(loss['first_loss']))} |")
    uniform = loss["uniform_loss"]
    if uniform is None:
        return lines + ["", f"Uniform guess: unknown, vocabulary size {loss['vocab_source']}.", ""]
    lines.append(f"| uniform guess ln({loss['vocab_size']}) | | {uniform:.3f} | |")
    lines += ["", f"Vocabulary size from {loss['vocab_source']}. {verdict_sentence(loss)}", ""]
    return lines


def verdict_sentence(loss: dict) -> str:
    """Which side of a uniform guess each side of the border ends on."""
    uniform = loss["uniform_loss"]
    ends = {side: loss["final_loss"][side]["median"] for side in SIDES}
    if any(v is None for v in ends.values()):
        return ""
    if all(v >= uniform for v in ends.values()):
        return ("**Both sides end above the uniform guess: this border separates runs that fail a little less "
                "from runs that fail a little more.**")
    if all(v < uniform for v in ends.values()):
        return "Both sides end below the uniform guess: the runs on either side learn something."
    return "The trainable side ends below the uniform guess, the not-trainable side above it."
