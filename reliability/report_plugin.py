"""A pytest plugin that records each scenario's outcome, duration and figures to a JSON file.

Figures are what a test hands to `record_property(name, value)` (runs, duplicates found, writes before a
failure, ...). run.py loads this plugin (`-p report_plugin`) and turns the JSON into report.md.
"""
import json
import os
import time

_results = {}


def pytest_runtest_logreport(report):
    entry = _results.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed", "seconds": 0.0,
                                                "figures": {}, "message": ""})
    entry["seconds"] += report.duration
    entry["figures"].update({key: value for key, value in report.user_properties})
    if report.when == "call" and hasattr(report, "wasxfail"):
        entry["outcome"] = "xfailed" if report.skipped else "xpassed"
    elif report.failed:
        entry["outcome"] = "failed" if report.when == "call" else "error"
        entry["message"] = (report.longreprtext or "").strip().splitlines()[-1][:400] if report.longreprtext else ""
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
        entry["message"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("OCV_REL_JSON")
    if path:
        with open(path, "w") as handle:
            json.dump({"finished": time.time(), "exitstatus": int(exitstatus), "tests": list(_results.values())},
                      handle, indent=1)
