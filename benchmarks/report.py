"""The pure part of the benchmarks: summaries, ratios, targets, the Markdown table, the JSON document and a
fallback SVG chart. No subprocess, no lab: tests/unit/test_bench_report.py covers it.

A row compares one measured thing of ours with a reference: a peer collection's equivalent, the
`ansible.builtin.ping` floor, or our own single-node listing. `ratio` is always ours / reference, so smaller is
better, and a target is a ceiling on that ratio.
"""
from __future__ import annotations

import html
import json
import statistics

NOT_MEASURED = "not measured"


def median(values):
    """The median of the numbers given, or None for none."""
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def summarize(samples):
    """{median, min, max, n, samples} of a list of seconds (rounded to the millisecond for reading)."""
    samples = [float(value) for value in samples if value is not None]
    if not samples:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {"median": round(median(samples), 4), "min": round(min(samples), 4), "max": round(max(samples), 4),
            "n": len(samples), "samples": [round(value, 4) for value in samples]}


def ratio(ours, reference):
    """ours / reference, or None when either is missing or the reference is zero."""
    if ours is None or reference is None or reference == 0:
        return None
    return round(ours / reference, 3)


def round_range(ours, reference):
    """(lowest, highest) of ours / reference taken round by round, or None.

    Each round runs the two sides one after the other, so sample i of one side pairs with sample i of the other.
    The spread shows how firm a verdict is: a range that straddles the target is within the machine's noise.
    """
    ours_samples = (ours or {}).get("samples") or []
    reference_samples = (reference or {}).get("samples") or []
    if len(ours_samples) != len(reference_samples) or len(ours_samples) < 2:
        return None
    ratios = [ratio(mine, theirs) for mine, theirs in zip(ours_samples, reference_samples)]
    if None in ratios:
        return None
    return [min(ratios), max(ratios)]


def verdict(value, target_max):
    """"pass" / "fail" for a ratio against its ceiling; "n/a" without a target, "not measured" without a ratio."""
    if target_max is None:
        return "n/a"
    if value is None:
        return NOT_MEASURED
    return "pass" if value <= target_max else "fail"


def make_row(case, backend, size=None, ours=None, reference=None, reference_label="peer", target_max=None,
             target_text=None, ours_requests=None, reference_requests=None, note="", status=None):
    """One line of the report. `ours` and `reference` are summaries (see summarize) or None.

    `status` other than None (e.g. "not measured: failed: ...") marks a row whose numbers were not
    taken; its ratio and verdict are then never computed from anything.
    """
    ours_median = (ours or {}).get("median")
    reference_median = (reference or {}).get("median")
    measured = status is None
    status = " ".join(status.split()) if status else status  # one line, for the tables
    value = ratio(ours_median, reference_median) if measured else None
    return {
        "case": case, "backend": backend, "size": size,
        "ours": ours if measured else None, "reference": reference if measured else None,
        "reference_label": reference_label,
        "ours_median": ours_median if measured else None,
        "reference_median": reference_median if measured else None,
        "ratio": value,
        "round_range": round_range(ours, reference) if measured else None,
        "target_max": target_max, "target": target_text or (f"<= {target_max}x" if target_max is not None else ""),
        "result": verdict(value, target_max) if measured else NOT_MEASURED,
        "ours_requests": ours_requests if measured else None,
        "reference_requests": reference_requests if measured else None,
        "status": status or "measured", "note": note,
    }


def _seconds(value):
    return "-" if value is None else f"{value:.3f}"


def _number(value):
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    return str(int(value))


def _ratio_text(value):
    return "-" if value is None else f"{value:.2f}x"


def _range_text(span):
    return "-" if span is None else f"{span[0]:.2f}-{span[1]:.2f}x"


TABLE_HEADER = ("case", "backend", "size", "ours s", "reference", "ref s", "ours/ref", "per round",
                "requests ours/ref", "target", "result", "note")


def table_rows(rows):
    """Each row as the cells of the table, in TABLE_HEADER order."""
    cells = []
    for row in rows:
        note = row["note"]
        if row["status"] != "measured":
            note = row["status"] + (f"; {note}" if note else "")
        cells.append((row["case"], row["backend"], "-" if row["size"] is None else str(row["size"]),
                      _seconds(row["ours_median"]), row["reference_label"], _seconds(row["reference_median"]),
                      _ratio_text(row["ratio"]), _range_text(row["round_range"]),
                      f"{_number(row['ours_requests'])} / {_number(row['reference_requests'])}",
                      row["target"] or "-", row["result"], note))
    return cells


def markdown_table(rows):
    """A GitHub Markdown table of the rows (pipes inside cells escaped)."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "|".join("---" for _ in TABLE_HEADER) + "|"]
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def text_table(rows):
    """The same table in aligned plain text, for stdout."""
    all_cells = [TABLE_HEADER] + table_rows(rows)
    widths = [max(len(str(cells[index])) for cells in all_cells) for index in range(len(TABLE_HEADER))]
    widths[-1] = 0  # the note column is not padded
    lines = []
    for number, cells in enumerate(all_cells):
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip())
        if number == 0:
            lines.append("  ".join("-" * max(width, 4) for width in widths[:-1]) + "  ----")
    return "\n".join(lines)


def target_summary(rows):
    """{"pass": n, "fail": n, "not measured": n} over the rows that carry a target."""
    counts = {"pass": 0, "fail": 0, NOT_MEASURED: 0}
    for row in rows:
        if row["target_max"] is not None:
            counts[row["result"]] = counts.get(row["result"], 0) + 1
    return counts


def document(meta, rows, details=None):
    """The results.json document: run metadata, the rows, the target summary and raw per-run details."""
    return {"version": 1, "meta": meta, "rows": rows, "targets": target_summary(rows), "details": details or []}


def dumps(doc):
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"


def markdown_report(meta, rows, findings=()):
    """benchmarks/results/report.md."""
    counts = target_summary(rows)
    lines = [f"# Benchmarks: oneclickvirt.virt against the peer collections ({meta.get('scale', '?')} scale)", ""]
    for key in ("started", "finished", "host", "ours", "peers", "rounds", "method"):
        if meta.get(key) is not None:
            lines.append(f"- **{key}**: {meta[key]}")
    lines += ["", f"Targets: {counts['pass']} pass, {counts['fail']} fail, {counts[NOT_MEASURED]} not measured.",
              "", "Every time is the median wall time of a whole process (`ansible-inventory --list`, "
              "`ansible localhost -m ...` or `ansible-playbook`), in seconds. `ours/ref` is ours divided by the "
              "reference; a target is a ceiling on that ratio. `per round` is the lowest and the highest ratio of "
              "a single round: a verdict whose range straddles the target is within the machine's noise.", "",
              markdown_table(rows), ""]
    if findings:
        lines += ["## Notes", ""] + [f"- {finding}" for finding in findings] + [""]
    return "\n".join(lines)


def row_label(row):
    size = "" if row["size"] is None else f" {row['size']}"
    return f"{row['case']} {row['backend']}{size} vs {row['reference_label']}"


def svg_chart(rows, width=900, bar_height=18):
    """A plain SVG of every measured ratio (ours / reference) as a bar, with its target as a red tick.

    The fallback when matplotlib is not installable; no dependency beyond the standard library.
    """
    plotted = [row for row in rows if row["ratio"] is not None]
    label_width, margin = 360, 20
    scale_max = max([1.5] + [row["ratio"] for row in plotted] + [row["target_max"] or 0 for row in plotted])
    plot_width = width - label_width - 2 * margin
    height = margin * 3 + bar_height * 1.5 * max(1, len(plotted))

    def x_of(value):
        return label_width + margin + plot_width * min(value, scale_max) / scale_max

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{int(height)}" '
             f'font-family="sans-serif" font-size="11">',
             f'<text x="{margin}" y="{margin}" font-size="13">ours / reference (median wall time); '
             'red tick: target ceiling; line: 1.0</text>']
    for index, row in enumerate(plotted):
        y = margin * 2 + index * bar_height * 1.5
        colour = {"pass": "#3a7d44", "fail": "#c0392b"}.get(row["result"], "#5d6d7e")
        parts.append(f'<text x="{margin}" y="{y + bar_height * 0.75:.1f}">{html.escape(row_label(row))}</text>')
        width = x_of(row["ratio"]) - label_width - margin
        parts.append(f'<rect x="{label_width + margin}" y="{y:.1f}" width="{width:.1f}" height="{bar_height}" '
                     f'fill="{colour}"/>')
        parts.append(f'<text x="{x_of(row["ratio"]) + 4:.1f}" y="{y + bar_height * 0.75:.1f}">'
                     f'{row["ratio"]:.2f}x</text>')
        if row["target_max"] is not None:
            tick = x_of(row["target_max"])
            parts.append(f'<line x1="{tick:.1f}" x2="{tick:.1f}" y1="{y - 2:.1f}" y2="{y + bar_height + 2:.1f}" '
                         'stroke="red" stroke-width="2"/>')
    one = x_of(1.0)
    parts.append(f'<line x1="{one:.1f}" x2="{one:.1f}" y1="{margin * 1.5}" y2="{height - margin}" '
                 'stroke="#333" stroke-dasharray="4,3"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
