"""The pure part of the benchmark harness (benchmarks/report.py): medians, ratios, targets, table and JSON shape.

No lab, no subprocess; speed is measured by `make bench`, never asserted here.
"""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import report  # noqa: E402  (benchmarks/report.py)


def test_median_and_summary():
    assert report.median([3, 1, 2]) == 2
    assert report.median([4, 1, 2, 3]) == 2.5
    assert report.median([]) is None
    summary = report.summarize([1.23456, 0.5, 2.0])
    assert summary == {"median": 1.2346, "min": 0.5, "max": 2.0, "n": 3, "samples": [1.2346, 0.5, 2.0]}
    assert report.summarize([])["median"] is None


@pytest.mark.parametrize("ours, reference, expected", [
    (1.0, 2.0, 0.5), (3.0, 2.0, 1.5), (None, 2.0, None), (1.0, None, None), (1.0, 0, None)])
def test_ratio_is_ours_over_reference(ours, reference, expected):
    assert report.ratio(ours, reference) == expected


def test_verdict_against_a_ceiling():
    assert report.verdict(0.15, 0.15) == "pass"
    assert report.verdict(0.151, 0.15) == "fail"
    assert report.verdict(None, 1.0) == "not measured"
    assert report.verdict(2.0, None) == "n/a"


def test_row_with_numbers():
    row = report.make_row(case="inventory", backend="lxd", size=200, ours=report.summarize([0.9, 1.0, 1.1]),
                          reference=report.summarize([9.0, 10.0, 11.0]), reference_label="lxd",
                          target_max=0.15, ours_requests=1, reference_requests=601)
    assert row["ratio"] == 0.1 and row["result"] == "pass" and row["target"] == "<= 0.15x"
    assert row["status"] == "measured"
    assert row["round_range"] == [0.1, 0.1]
    cells = report.table_rows([row])[0]
    assert cells[report.TABLE_HEADER.index("per round")] == "0.10-0.10x"


def test_round_range_pairs_the_rounds_and_needs_them_to_pair():
    ours, reference = report.summarize([1.0, 1.3, 0.9]), report.summarize([1.0, 1.0, 1.2])
    assert report.round_range(ours, reference) == [0.75, 1.3]
    assert report.round_range(ours, report.summarize([1.0, 1.0])) is None  # rounds that do not pair up
    assert report.round_range(report.summarize([1.0]), report.summarize([1.0])) is None  # one round: no spread
    row = report.make_row(case="create", backend="lxd", size=20, ours=ours, reference=reference, target_max=1.0,
                          status="not measured: x")
    assert row["round_range"] is None


def test_row_not_measured_never_carries_a_number():
    row = report.make_row(case="inventory", backend="proxmox", size=200, ours=report.summarize([1.0]),
                          reference=report.summarize([2.0]), target_max=1.0,
                          status="not measured: no proxmox backend yet")
    assert row["ratio"] is None and row["ours_median"] is None and row["reference_median"] is None
    assert row["result"] == "not measured"
    cells = report.table_rows([row])[0]
    assert cells[report.TABLE_HEADER.index("result")] == "not measured"
    assert "no proxmox backend yet" in cells[-1]


def test_tables_and_json_shape():
    rows = [report.make_row(case="no-op task", backend="docker", ours=report.summarize([1.2]),
                            reference=report.summarize([1.0]), reference_label="ping floor", target_max=1.15,
                            note="a|b"),
            report.make_row(case="create", backend="docker", size=20, ours=report.summarize([4.0]),
                            reference=report.summarize([5.0]), target_max=1.0, ours_requests=3.5,
                            reference_requests=7),
            report.make_row(case="inventory", backend="proxmox", size=50, target_max=1.0,
                            status="not measured: no proxmox backend yet")]
    markdown = report.markdown_table(rows).splitlines()
    assert markdown[0].startswith("| case | backend |") and len(markdown) == 2 + len(rows)
    assert "a\\|b" in markdown[2] and "1.20x" in markdown[2] and "fail" in markdown[2]
    assert "3.5 / 7" in markdown[3] and "pass" in markdown[3]
    text = report.text_table(rows)
    assert "not measured" in text and len(text.splitlines()) == 2 + len(rows)
    doc = json.loads(report.dumps(report.document({"scale": "small"}, rows)))
    assert doc["targets"] == {"pass": 1, "fail": 1, "not measured": 1}
    assert [row["case"] for row in doc["rows"]] == ["no-op task", "create", "inventory"]
    md = report.markdown_report({"scale": "small"}, rows, ["a finding"])
    assert "1 pass, 1 fail, 1 not measured" in md and "- a finding" in md


def test_svg_chart_plots_measured_rows_only():
    rows = [report.make_row(case="inventory", backend="lxd", size=200, ours=report.summarize([1.0]),
                            reference=report.summarize([4.0]), target_max=0.15),
            report.make_row(case="inventory", backend="proxmox", size=200, status="not measured: x")]
    svg = report.svg_chart(rows)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "inventory lxd 200" in svg and "proxmox" not in svg and "0.25x" in svg
