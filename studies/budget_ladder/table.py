"""The budget ladder's table (docs/results.md) from its reports: one row per part that has one.

    python studies/budget_ladder/table.py [runs/budget_ladder]

Reads OUT/LOCATION/PART/report/report.json (the transect), OUT/perturb/LOCATION_PART/uncertainty.json (its
perturbation study, when run) and OUT/wall_times.tsv, and prints a markdown table.
"""

import json
import sys
from pathlib import Path


def cell(value, fmt: str = "{:.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def interval(pair) -> str:
    return "–" if not pair or None in pair else f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def row(out: Path, report_path: Path, walls: dict) -> str:
    report = json.loads(report_path.read_text())
    part_dir = report_path.parent.parent
    location, part = part_dir.parent.name, part_dir.name
    schedule, seed, steps, *scale = part.split("_")  # scale: ["fine"] for the line ten times finer
    t, loss = report["transect"], report.get("border_loss") or {}
    perturb = out / "perturb" / f"{location}_{part}" / "uncertainty.json"
    alpha, floor, flips, double = "–", "–", "–", "–"
    if perturb.exists():
        u = json.loads(perturb.read_text())
        rounding, f64 = u.get("rounding") or {}, u.get("float64") or {}
        floor = cell(rounding.get("floor"), "{:.3g}") if rounding.get("floor") is not None else "< finest"
        flips = f"{cell(rounding.get('mean_change'), '{:.3g}')}, {rounding.get('flips', '–')} / {rounding.get('points', '–')}"
        double = f"{cell(f64.get('mean_change'), '{:.3g}')}, {f64.get('flips', '–')} / {f64.get('points', '–')}"
    windows = []  # every uncertainty study of the part: the default window, and perturb_wW/ for narrower ones
    for study in [perturb, *sorted(out.glob(f"perturb_w*/{location}_{part}/uncertainty.json"))]:
        if study.exists():
            u = json.loads(study.read_text())
            a = u["uncertainty"]["alpha"]
            windows.append(f"±{u['plan']['window']:.3g}: " + ("no fit" if a is None else
                                                                f"{a:.2f} {interval(u['uncertainty']['interval'])}"))
    alpha = "; ".join(windows) or "–"
    final = loss.get("final_loss", {})
    sides = "/".join(cell((final.get(side) or {}).get("median"), "{:.2f}") for side in ("trainable", "not_trainable"))
    crossover = cell(t["crossover"], "{:.3g}") if t["crossover"] is not None else f"< {t['step']:.2g}"
    wall = walls.get(f"{location}_{part}", "–")
    return (f"| {steps[1:]} | {schedule} | {seed[4:]} | {location}{' (fine)' if scale else ''} | {crossover} | {cell(t['line_dimension'], '{:.2f}')} "
            f"{interval(t['interval'])} | {cell(t['roughness_exponent'], '{:.2f}')} | {floor} | {flips} | {double} | {alpha} | "
            f"{sides} | {report['points']} | {wall} |")


def main(out: Path) -> None:
    seconds: dict[str, int] = {}  # a part resumed in several sessions: the sum of its calls
    if (out / "wall_times.tsv").exists():
        for line in (out / "wall_times.tsv").read_text().splitlines():
            part, wall, _ = line.split("\t")
            part = part if part.startswith(("centre_", "mid_", "perturb_")) else f"centre_{part}"
            seconds[part] = seconds.get(part, 0) + int(wall)
    walls = {part: f"{s / 60:.1f} min" for part, s in seconds.items()}
    print("| T | schedule | seed | location | smooth below (decades) | D_line [95%] | roughness exponent (finest 3 "
          "octaves) | precision floor | 1e-7 change: mean abs dr, flips | float64: mean abs dr, flips | alpha [95%] by window (decades) | "
          "final loss at the border, trainable/not | "
          "runs | wall |")
    print("|---:|---|---:|---|---:|---|---:|---:|---:|---:|---|---|---:|---:|")
    reports = sorted(out.glob("*/*/report/report.json"),
                     key=lambda p: (p.parent.parent.parent.name, p.parent.parent.name.split("_")[0],
                                    p.parent.parent.name.split("_")[1],
                                    int(p.parent.parent.name.split("_T")[1].split("_")[0]), p.parent.parent.name))
    for path in reports:
        print(row(out, path, walls))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/budget_ladder"))
