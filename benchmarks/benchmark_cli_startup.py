"""Start-up time of the ``medgen`` command line: median wall time of ``medgen --help`` and of every ``medgen CMD
[ACTION ...] --help`` over fresh processes, plus the slowest imports from ``python -X importtime``.

    python benchmarks/benchmark_cli_startup.py                      # medgen --help and every command and action, 5 runs each
    python benchmarks/benchmark_cli_startup.py --commands upscale   # medgen --help and 'medgen upscale --help' only
    python benchmarks/benchmark_cli_startup.py --max-seconds 2      # exit 1 when a median is above 2 s (a CI step)

A benchmark, not a test: the numbers depend on the machine's load and its disk cache (the first run after a
reboot reads every file from disk), which is why it reports the median of several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "monai", "diffusers", "transformers", "scipy", "SimpleITK", "matplotlib", "ignite")


def every_command() -> list[str]:
    """Every command and action of the full ``medgen`` parser, depth first: ``upscale``, ``bundle``, ``bundle list``, ..."""
    from medgen_core.cli.main import build_parser

    found: list[str] = []

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append(" ".join((*prefix, name)))
                    walk(sub, (*prefix, name))

    walk(build_parser(), ())
    return found


def medgen_command() -> list[str]:
    """The installed ``medgen`` console script (what users run), else ``python -m medgen_core.cli.main``."""
    script = shutil.which("medgen", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return [script] if script else [sys.executable, "-m", "medgen_core.cli.main"]


def time_runs(argv: list[str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` fresh processes running ``argv`` (each must exit 0)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return times


def import_profile(args: list[str]) -> list[tuple[str, float, float]]:
    """``(package, self s, cumulative s)`` of the top-level packages that ``medgen ARGS`` imports (medgen_core's own
    modules excluded: their time is that of what they import), slowest first, from ``python -X importtime``."""
    code = f"import sys; from medgen_core.cli.main import main; sys.argv = ['medgen', *{args!r}]; sys.exit(main())"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if match:
            rows.append((match.group(4), int(match.group(1)) / 1e6, int(match.group(2)) / 1e6))
    packages = [(name, own, cum) for name, own, cum in rows if "." not in name and name != "medgen_core"]
    return sorted(packages, key=lambda r: -r[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="processes per command (default 5; the median is reported)")
    parser.add_argument("--commands", nargs="*", default=["all"],
                        help="also time 'medgen CMD --help' for these ('bundle list' for an action; default 'all': every command and action)")
    parser.add_argument("--top", type=int, default=12, help="slowest imports to list (default 12)")
    parser.add_argument("--max-seconds", type=float, default=None, help="exit 1 when a median is above this")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    commands = every_command() if args.commands == ["all"] else args.commands
    base = medgen_command()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {' '.join(base)}")
    results = {}
    for cmd in [None, *commands]:
        argv = [*(cmd.split() if cmd else []), "--help"]
        times = time_runs([*base, *argv], args.runs)
        results[" ".join(["medgen", *argv])] = {"median_s": statistics.median(times), "runs_s": [round(t, 3) for t in times]}
    width = max(len(k) for k in results)
    print(f"\n{'command':<{width}}  median s  runs (s)")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['median_s']:8.2f}  {' '.join(f'{t:.2f}' for t in r['runs_s'])}")

    profile = import_profile(["--help"])
    loaded = {name for name, _, _ in profile}
    print(f"\n'medgen --help' imports these heavy packages: "
          f"{', '.join(h for h in HEAVY if h in loaded) or 'none'}")
    print(f"{'package':<40} {'self s':>7} {'cumulative s':>13}")
    for name, own, cum in profile[: args.top]:
        print(f"{name:<40} {own:7.3f} {cum:13.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"results": results, "imports": profile[: args.top]}, handle, indent=2)
    slowest = max(results, key=lambda k: results[k]["median_s"])
    print(f"\nslowest median: {slowest} {results[slowest]['median_s']:.2f} s over {len(results)} command lines")
    slow = [k for k, r in results.items() if args.max_seconds is not None and r["median_s"] > args.max_seconds]
    if slow:
        print(f"\nabove {args.max_seconds} s: {', '.join(slow)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
