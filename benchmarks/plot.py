"""`python plot.py results.json out.png`: the PNG chart of a benchmark run, with matplotlib.

run.py calls it with the bench-only venv (benchmarks/.venv) when that venv has matplotlib; otherwise run.py
writes report.py's plain SVG instead.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(row):
    size = "" if row["size"] is None else f" {row['size']}"
    return f"{row['case']} {row['backend']}{size}\nvs {row['reference_label']}"


def main(source, target):
    with open(source, encoding="utf-8") as handle:
        rows = [row for row in json.load(handle)["rows"] if row["ratio"] is not None]
    if not rows:
        rows = []
    height = max(3.0, 0.42 * len(rows) + 1.5)
    figure, (left, right) = plt.subplots(1, 2, figsize=(15, height), sharey=True,
                                         gridspec_kw={"width_ratios": [1.2, 1]})
    positions = list(range(len(rows)))
    labels = [label(row) for row in rows]
    ours = [row["ours_median"] for row in rows]
    reference = [row["reference_median"] for row in rows]
    left.barh([p + 0.2 for p in positions], ours, height=0.4, color="#2e86c1", label="ours")
    left.barh([p - 0.2 for p in positions], reference, height=0.4, color="#aab7b8", label="reference")
    left.set_xscale("log")
    left.set_xlabel("median wall time, s (log)")
    left.set_yticks(positions)
    left.set_yticklabels(labels, fontsize=7)
    left.legend(loc="lower right", fontsize=8)
    left.invert_yaxis()
    colours = [{"pass": "#3a7d44", "fail": "#c0392b"}.get(row["result"], "#5d6d7e") for row in rows]
    right.barh(positions, [row["ratio"] for row in rows], color=colours)
    for position, row in zip(positions, rows):
        if row.get("round_range"):  # whisker: the lowest and the highest ratio of a single round
            right.plot(row["round_range"], [position, position], color="#333", linewidth=1)
    for position, row in zip(positions, rows):
        right.text(row["ratio"], position, f" {row['ratio']:.2f}x", va="center", fontsize=7)
        if row["target_max"] is not None:
            right.plot([row["target_max"]] * 2, [position - 0.4, position + 0.4], color="red", linewidth=2)
    right.axvline(1.0, color="#333", linestyle="--", linewidth=1)
    right.set_xlabel("ours / reference (red: target ceiling; green pass, red fail, grey no target)")
    figure.suptitle("oneclickvirt.virt vs peer collections")
    figure.tight_layout()
    figure.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
