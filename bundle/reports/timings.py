"""How long the project's own commands take on this machine, measured and written as one table (``docs/timings.md``),
so that README and the model card point at a measurement instead of carrying hand-typed times.

``make timings`` installs what the targets need (untimed), then runs ``python -m bundle.reports.timings``, which runs ``make demo``, ``make test-fast`` and
``make test`` one after the other (never two torch processes at once), times each, reads pytest's summary lines
and the demo's test averages, and writes the table with the date and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bundle import BUNDLE_ROOT
from bundle.errors import install_excepthook
from bundle.io import atomic_write

__all__ = ["TARGETS", "pytest_summaries", "format_duration", "timings_markdown", "main"]

TARGETS = ("demo", "test-fast", "test")
"""The make targets timed, in the order they run (the demo first: the tests then run beside its models/ and eval/)."""

_SUMMARY = re.compile(r"^=*\s*(?:(\d+) failed, )?(\d+) passed(?:, (\d+) skipped)?.*? in ([\d.]+)s", re.M)


def pytest_summaries(output: str) -> list[dict[str, float]]:
    """pytest's closing lines in ``output``, one per pytest run.

    Example:
        >>> pytest_summaries("...\\n528 passed, 7 skipped, 5 warnings in 395.21s (0:06:35)\\n4 passed in 68.0s\\n")
        [{'passed': 528, 'failed': 0, 'skipped': 7, 'seconds': 395.21}, {'passed': 4, 'failed': 0, 'skipped': 0, 'seconds': 68.0}]
    """
    return [
        {"passed": int(passed), "failed": int(failed or 0), "skipped": int(skipped or 0), "seconds": float(seconds)}
        for failed, passed, skipped, seconds in _SUMMARY.findall(output)
    ]


def format_duration(seconds: float) -> str:
    """``477`` -> ``"7 min 57 s"``; under a minute, ``"42 s"``.

    Example:
        >>> format_duration(477), format_duration(42.4)
        ('7 min 57 s', '42 s')
    """
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        model = found.group(1).strip() if found else model
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU cores ({model}), {memory:.0f} GiB, Python {platform.python_version()}"


def _detail(target: str, output: str) -> str:
    if target == "demo":
        summary = BUNDLE_ROOT / "eval" / "report" / "summary.md"
        found = re.search(r"^\| average of combinations \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", summary.read_text(), re.M)
        averages = [cell.split("±")[0].strip() for cell in found.groups()] if found else ["?"] * 3
        return "test averages over the 15 combinations: ET {}, TC {}, WT {}".format(*averages)
    parts = []
    for index, run in enumerate(pytest_summaries(output)):
        counts = [f"{run[key]} {key}" for key in ("passed", "failed", "skipped") if run[key] or key == "passed"]
        environment = (".venv", ".venv-clients")[min(index, 1)]
        parts.append(f"{', '.join(counts)} in {format_duration(run['seconds'])} ({environment})")
    return "; ".join(parts)


def timings_markdown(rows: Sequence[tuple[str, float, str, int]], date: str, machine: str) -> str:
    """The table: one row per ``(target, seconds, detail, exit code)``.

    Example:
        >>> print(timings_markdown([("test", 477.0, "528 passed", 0)], "2026-12-05", "2 CPU cores"))
        # Measured times
        <BLANKLINE>
        Written by `make timings` on 2026-12-05, on 2 CPU cores, after the installs (not timed).
        <BLANKLINE>
        | command | wall time | what it did |
        |---|---|---|
        | `make test` | 7 min 57 s | 528 passed |
        <BLANKLINE>
    """
    lines = [
        "# Measured times",
        "",
        f"Written by `make timings` on {date}, on {machine}, after the installs (not timed).",
        "",
        "| command | wall time | what it did |",
        "|---|---|---|",
    ]
    for target, seconds, detail, code in rows:
        lines.append(
            f"| `make {target}` | {format_duration(seconds)} | {detail}{'' if code == 0 else f' (exit {code})'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    install_excepthook()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(BUNDLE_ROOT / "docs" / "timings.md"))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    args = parser.parse_args(argv)
    rows = []
    for target in args.targets:
        print(f"timing make {target} ...", flush=True)
        start = time.perf_counter()
        done = subprocess.run(["make", target], cwd=BUNDLE_ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        sys.stdout.write(done.stdout[-2000:])
        # a failed demo leaves the previous run's report: its averages would not be this run's
        detail = "failed" if target == "demo" and done.returncode else _detail(target, done.stdout + done.stderr)
        rows.append((target, seconds, detail, done.returncode))
    table = timings_markdown(rows, datetime.date.today().isoformat(), _machine())
    atomic_write(args.out, lambda file: file.write(table.encode()))
    print(f"wrote {args.out}")
    if any(code for *_, code in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
