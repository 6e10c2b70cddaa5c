"""`make reliability`: run the reliability and security scenarios against the lab and write a report.

    python reliability/run.py [--scale 0.2] [--no-load] [--no-referenced] [-k EXPR]

Runs tests/reliability (every scenario, with OCV_RELIABILITY=1) and then the existing integration tests that
already prove part of issue 12 (listed in REFERENCED), each pytest run with report_plugin.py, and writes
reliability/results/report.json and report.md: scenarios, pass/fail, runs, duplicates found, writes before a
failure, timings. Load counts scale with --scale (OCV_REL_SCALE); the report says which scale was used.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

# Existing tests that prove part of issue 12; run as they are, never copied. Tests that inject faults into the
# lab's shared Proxmox simulator (test_proxmox.py's lost answer and HTTPS-down tests, test_pvesim.py's fault
# tests) are left out: other people's runs use that simulator at the same time.
REFERENCED = [
    "tests/integration/test_docker_instance.py::test_lost_answer_to_create_leaves_exactly_one",
    "tests/integration/test_docker_instance.py::test_auto_falls_back_when_the_api_is_unreachable",
    "tests/integration/test_docker_instance.py::test_both_transports_failing_names_both",
    "tests/integration/test_docker_instance.py::test_hostile_names_are_rejected_before_anything_is_sent",
    "tests/integration/test_docker_instance.py::test_hostile_values_arrive_literally",
    "tests/integration/test_docker_instance.py::test_password_is_set_and_never_leaks",
    "tests/integration/test_transports.py",
    "tests/integration/test_exec_password.py::test_exec_argv_arrives_literally",
    "tests/integration/test_exec_password.py::test_given_password_is_set_and_never_leaks",
    "tests/integration/test_exec_password.py::test_action_group_and_a_generated_password_kept_out_of_the_log",
    "tests/integration/test_proxmox.py::test_bad_input_fails_before_any_write",
    "tests/integration/test_proxmox.py::test_hostile_values_arrive_literally_over_ssh",
    "tests/integration/test_proxmox.py::test_password_is_set_and_never_leaks",
]

GROUPS = [
    ("test_faults.py", "1. Faults"),
    ("test_input_properties.py", "2. Bad input: property-based, in process"),
    ("test_bad_input_lab.py", "2. Bad input: real modules against the lab"),
    ("test_secrets_and_trust.py", "3. Secrets and trust"),
    ("test_load.py", "4. Load"),
    ("tests/integration/", "Referenced existing tests"),
]


def group_of(nodeid):
    return next((title for key, title in GROUPS if key in nodeid), "Other")


def run_pytest(paths, json_path, extra_env, extra_args):
    env = dict(os.environ, OCV_REL_JSON=str(json_path), **extra_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "-p", "report_plugin", "-q", "-rfE", *extra_args, *paths]
    print("+", " ".join(command), flush=True)
    started = time.monotonic()
    completed = subprocess.run(command, cwd=ROOT, env=env)
    seconds = time.monotonic() - started
    data = json.loads(json_path.read_text()) if json_path.exists() else {"tests": [], "exitstatus": completed.returncode}
    return data, seconds


def number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def summarise(tests, seconds_by_run, scale):
    outcomes = {}
    for test in tests:
        outcomes[test["outcome"]] = outcomes.get(test["outcome"], 0) + 1
        test["group"] = group_of(test["nodeid"])
    groups = {}
    for test in tests:
        group = groups.setdefault(test["group"], {"scenarios": 0, "passed": 0, "failed": 0, "seconds": 0.0})
        group["scenarios"] += 1
        group["passed"] += test["outcome"] in ("passed", "xfailed")
        group["failed"] += test["outcome"] in ("failed", "error", "xpassed")
        group["seconds"] = round(group["seconds"] + test["seconds"], 1)
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "scale": scale,
        "scenarios": len(tests),
        "passed": outcomes.get("passed", 0),
        "failed": outcomes.get("failed", 0) + outcomes.get("error", 0),
        "known_bugs_xfailed": outcomes.get("xfailed", 0),
        "xpassed": outcomes.get("xpassed", 0),
        "skipped": outcomes.get("skipped", 0),
        "runs": sum(number(test["figures"].get("runs")) for test in tests),
        "duplicates_found": sum(number(test["figures"].get("duplicates")) for test in tests),
        "writes_before_failure": sum(number(test["figures"].get("writes_before_failure")) for test in tests),
        "seconds": {name: round(value, 1) for name, value in seconds_by_run.items()},
        "groups": groups,
        "tests": tests,
    }


def markdown(report):
    lines = [
        "# Reliability and security report", "",
        f"Generated {report['generated']} by `make reliability` (reliability/run.py). Load scale: {report['scale']}.",
        "",
        "| figure | value |", "|---|---|",
        f"| scenarios | {report['scenarios']} |",
        f"| passed | {report['passed']} |",
        f"| failed | {report['failed']} |",
        f"| known bugs and limitations (xfail; each names the bug) | {report['known_bugs_xfailed']} |",
        f"| module / playbook runs counted by scenarios | {report['runs']} |",
        f"| duplicates found | {report['duplicates_found']} |",
        f"| writes before failure (sum over fault scenarios) | {report['writes_before_failure']} |",
    ]
    lines += [f"| seconds, {name} | {value} |" for name, value in report["seconds"].items()]
    lines += ["", "## By group", "", "| group | scenarios | passed (an xfail counts as expected) | failed | seconds |", "|---|---|---|---|---|"]
    for title in sorted(report["groups"]):
        group = report["groups"][title]
        lines.append(f"| {title} | {group['scenarios']} | {group['passed']} | {group['failed']} | {group['seconds']} |")
    for title in sorted(report["groups"]):
        lines += ["", f"## {title}", "", "| scenario | outcome | seconds | figures |", "|---|---|---|---|"]
        for test in report["tests"]:
            if test["group"] != title:
                continue
            figures = "; ".join(f"{key}: {json.dumps(value)}" for key, value in test["figures"].items())
            if test["message"]:
                figures = (figures + "; " if figures else "") + "message: " + test["message"]
            name = test["nodeid"].split("::", 1)[-1] if "integration" not in test["nodeid"] else test["nodeid"]
            cell = figures.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name}` | {test['outcome']} | {test['seconds']:.1f} | {cell} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=float(os.environ.get("OCV_REL_SCALE", "1.0")),
                        help="scale of the load scenarios (1.0: 50 instances, 200 mappings, 500 guests)")
    parser.add_argument("--no-load", action="store_true", help="leave out the load scenarios")
    parser.add_argument("--no-referenced", action="store_true", help="leave out the referenced existing tests")
    parser.add_argument("-k", dest="keyword", help="only scenarios matching this pytest -k expression")
    options = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    extra = ["-k", options.keyword] if options.keyword else []
    own_args = extra + (["-m", "not load"] if options.no_load else [])
    env = {"OCV_RELIABILITY": "1", "OCV_REL_SCALE": str(options.scale)}
    started = time.monotonic()
    own, own_seconds = run_pytest(["tests/reliability"], RESULTS / "own.json", env, own_args)
    tests, seconds = list(own["tests"]), {"tests/reliability": own_seconds}
    if not options.no_referenced:
        referenced, ref_seconds = run_pytest(REFERENCED, RESULTS / "referenced.json", env, extra)
        tests += referenced["tests"]
        seconds["referenced existing tests"] = ref_seconds
    seconds["total"] = time.monotonic() - started
    report = summarise(tests, seconds, options.scale if not options.no_load else "load not run")
    (RESULTS / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / "report.md").write_text(markdown(report))
    print(f"reliability: {report['scenarios']} scenarios, {report['passed']} passed, {report['failed']} failed, "
          f"{report['known_bugs_xfailed']} known bugs; report: {RESULTS / 'report.md'}")
    return 1 if report["failed"] or report["xpassed"] else 0


if __name__ == "__main__":
    sys.exit(main())
