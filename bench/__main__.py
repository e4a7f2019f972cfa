"""Run every bench/bench_*.py module and (re)write BENCHMARKS.md with the machine and the date."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import pkgutil
import platform
import sys
from pathlib import Path

import bench
from bench import Result, Unavailable

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    only = set(sys.argv[1:])
    sections: list[str] = []
    for module_info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if not module_info.name.startswith("bench_") or (only and module_info.name not in only):
            continue
        module = importlib.import_module(f"bench.{module_info.name}")
        title = (module.__doc__ or module_info.name).strip().splitlines()[0]
        print(f"== {module_info.name}: {title}", flush=True)
        try:
            results: list[Result] = module.run()
        except Unavailable as exc:
            sections.append(f"## {title}\n\nNot measured: {exc}\n")
            print(f"   not measured: {exc}")
            continue
        rows = ["| measure | value | unit | note |", "|---|---:|---|---|"]
        for r in results:
            rows.append(f"| {r.name} | {r.value:,.0f} | {r.unit} | {r.note} |")
            print(f"   {r.name}: {r.value:,.0f} {r.unit} {r.note}", flush=True)
        sections.append(f"## {title}\n\n`bench/{module_info.name}.py`\n\n" + "\n".join(rows) + "\n")
    header = (
        "# Benchmarks\n\n"
        "Written by `python -m bench` (run it again to refresh;\n"
        "`python -m bench bench_signing` runs one module).\n\n"
        f"- date: {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n"
        f"- machine: {os.cpu_count()} cores (nproc), {cpu_model()}\n"
        f"- python {platform.python_version()} on {platform.platform()}\n\n"
        "Figures are single runs on a shared, noisy machine: read them as ranges, not promises.\n\n"
    )
    (ROOT / "BENCHMARKS.md").write_text(header + "\n".join(sections), encoding="utf-8")
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
