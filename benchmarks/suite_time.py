"""How long the test suite takes, in one process and in parallel workers (pytest-xdist), side by side.

CI runs the README's test command on a clean clone with an empty ``PROMPTINIT_CACHE``, and the
suite should stay under ~25 minutes there. This runs that suite once per mode, one after the
other on this machine, each from its own new empty cache (with the BIG-bench task files
extracted into it, as ``install.sh`` does), so both pay what CI pays: building the tiny models,
converting the packaged GGUF models, PT's baselines. It prints one table (mode | workers | wall
s | passed | failed | skipped | errors | ratio to one process) and writes each run's log, with
pytest's 25 slowest tests, to ``--logs``.

Run it on an idle machine: the suite's timings (and its real-model tests, whose intra-op threads
spin-wait when another process holds a core) are meaningless beside a running study. Running
both modes takes about an hour on 2 cores.

Usage:
    python benchmarks/suite_time.py                       # 1 process, then 2 workers
    python benchmarks/suite_time.py --workers 0 2 --logs runs/suite_time
    python benchmarks/suite_time.py --workers 2 -- tests/test_stats.py   # a part of the suite
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNTS = ("passed", "failed", "skipped", "errors")


def outcome(log: str) -> dict[str, int]:
    """pytest's final counts (``== 3 failed, 950 passed, 18 skipped in 1200.0s ==``); 0 for those absent."""
    last = [line for line in log.splitlines() if re.search(r"\b(passed|failed|error)", line)]
    found = dict.fromkeys(COUNTS, 0)
    if last:
        for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last[-1]):
            found["errors" if word.startswith("error") else word] = int(n)
    return found


def run_suite(workers: int, paths: list[str], logs: Path) -> dict:
    """The suite with ``-n workers`` (0: one process) from a new empty cache; its wall time and counts."""
    with tempfile.TemporaryDirectory(prefix="promptinit-suite-cache-") as cache:
        env = {**os.environ, "PROMPTINIT_CACHE": cache}
        subprocess.run([sys.executable, "-m", "promptinit.assets.bigbench"], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        log = logs / f"suite-n{workers}.log"
        t0 = time.perf_counter()
        with log.open("w") as out:
            rc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers),
                 "--durations=25", *paths],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            ).returncode
        wall = time.perf_counter() - t0
    return {"workers": workers, "wall_s": wall, "rc": rc, "log": log, **outcome(log.read_text(errors="replace"))}


def table(rows: list[dict]) -> str:
    base = next((r["wall_s"] for r in rows if r["workers"] == 0), None)
    lines = ["| mode | workers | wall s | passed | failed | skipped | errors | one process / this |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mode = "one process" if r["workers"] == 0 else "pytest-xdist"
        ratio = f"{base / r['wall_s']:.2f}x" if base else "-"
        lines.append(f"| {mode} | {r['workers'] or 1} | {r['wall_s']:.0f} | {r['passed']} | {r['failed']} | "
                     f"{r['skipped']} | {r['errors']} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="worker counts to time, in order; 0 is one process (default: 0 2)")
    p.add_argument("--logs", type=Path, default=ROOT / "runs" / "suite_time", help="folder for each run's log")
    p.add_argument("paths", nargs="*", help="test paths (after --); default: the whole suite")
    args = p.parse_args(argv)
    if any(w < 0 for w in args.workers):
        p.error(f"--workers: {args.workers} holds a negative count; use 0 for one process, N for N workers")
    args.logs.mkdir(parents=True, exist_ok=True)
    rows = []
    for w in args.workers:
        print(f"[suite_time] pytest -n {w} {' '.join(args.paths) or '(whole suite)'} ...", flush=True)
        rows.append(run_suite(w, args.paths, args.logs))
        r = rows[-1]
        print(f"[suite_time] -n {w}: {r['wall_s']:.0f} s, exit {r['rc']}, log {r['log']}", flush=True)
    print(table(rows))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
