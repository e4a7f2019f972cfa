"""Run every bench/bench_*.py module and (re)write BENCHMARKS.md, each section with its date and machine.

`python -m bench bench_mapping` runs one module and rewrites only its section; the other sections stay as they
were, each with the date and the machine it was measured on (sessions run on different machines).
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import pkgutil
import platform
import re
import sys
from pathlib import Path

import bench
from bench import Result, Unavailable

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "BENCHMARKS.md"
_MODULE_LINE = re.compile(r"^`bench/(bench_\w+)\.py`(.*)$", re.MULTILINE)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def this_machine() -> str:
    return f"{os.cpu_count()} cores (nproc), {cpu_model()}"


def earlier_sections() -> dict[str, str]:
    """The sections BENCHMARKS.md holds now, by module, each saying when it was measured (and on what machine)."""
    if not OUTPUT.is_file():
        return {}
    text = OUTPUT.read_text(encoding="utf-8")
    written = re.search(r"^- date: (.+)$", text, re.MULTILINE)
    sections = {}
    for part in re.split(r"^(?=## )", text, flags=re.MULTILINE)[1:]:
        found = _MODULE_LINE.search(part)
        if found is None:
            continue
        if not found.group(2) and written:  # written before sections carried their own date
            part = part[: found.end()] + f", measured {written.group(1)}" + part[found.end() :]
        sections[found.group(1)] = part.rstrip("\n") + "\n"
    return sections


def main() -> int:
    only = set(sys.argv[1:])
    now = f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    kept = earlier_sections() if only else {}
    sections: list[str] = []
    for module_info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if not module_info.name.startswith("bench_"):
            continue
        if only and module_info.name not in only:
            if module_info.name in kept:
                sections.append(kept[module_info.name])
            continue
        module = importlib.import_module(f"bench.{module_info.name}")
        title, _, method = (module.__doc__ or module_info.name).strip().partition("\n")
        heading = f"## {title}\n\n`bench/{module_info.name}.py`, measured {now} on {this_machine()}\n\n"
        if method.strip():
            heading += method.strip() + "\n\n"
        print(f"== {module_info.name}: {title}", flush=True)
        try:
            results: list[Result] = module.run()
        except Unavailable as exc:
            sections.append(f"{heading}Not measured: {exc}\n")
            print(f"   not measured: {exc}")
            continue
        rows = ["| measure | value | unit | note |", "|---|---:|---|---|"]
        for r in results:
            rows.append(f"| {r.name} | {r.value:,.0f} | {r.unit} | {r.note} |")
            print(f"   {r.name}: {r.value:,.0f} {r.unit} {r.note}", flush=True)
        sections.append(heading + "\n".join(rows) + "\n")
    header = (
        "# Benchmarks\n\n"
        "Written by `python -m bench` (run it again to refresh;\n"
        "`python -m bench bench_signing` runs one module and rewrites only its section).\n\n"
        f"- last written: {now}, on {this_machine()}, python {platform.python_version()} on "
        f"{platform.platform()}\n"
        "- each section says when and on what machine it was measured\n\n"
        "Figures are single runs unless a section says otherwise, on a shared, noisy machine: read them as ranges,\n"
        "not promises.\n\n"
    )
    OUTPUT.write_text(header + "\n".join(sections), encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
