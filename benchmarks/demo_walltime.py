"""P4: wall time of the default experiment end to end, ``cfair run`` with no config (``make demo``).

Runs ``python -m constrained_fairness run --output <temp> --quiet`` as a subprocess, so the
time includes interpreter start-up, imports, loading Adult, dense training, GMP and
fine-tuning of every method (nft, nft_es, el, ceag), evaluation, logging (TensorBoard,
offline wandb) and the report. The run folder is a temporary one, removed afterwards.
Also printed: the run's own ``timing.json`` (its stages and loggers, without the start-up,
imports and the final report).
Target: ≤ 180 s on 2 CPU cores.

    python benchmarks/demo_walltime.py                 # the full default experiment (1-3 min)
    python benchmarks/demo_walltime.py --repeats 3     # median of 3 runs
    python benchmarks/demo_walltime.py --quick         # a tiny run, nft only (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 180.0
QUICK = [  # one epoch of dense training and one of GMP, at batch 1024; nft only; no loggers
    "dense.epochs=1",
    "pruning.epochs=1",
    "finetune.epochs=0",
    "methods=[nft]",
    "dense.batch_size=1024",
    "finetune.batch_size=1024",
    "logging.wandb=disabled",
    "logging.tensorboard=false",
]


def run_once(overrides: list[str]) -> dict[str, float]:
    """One ``cfair run`` in a fresh temporary folder: its wall time, and the stages' time from
    its timing.json."""
    folder = Path(tempfile.mkdtemp(prefix="cfair_demo_"))
    command = [
        sys.executable,
        "-m",
        "constrained_fairness",
        "run",
        "--output",
        str(folder / "run"),
        "--quiet",
    ]
    for item in overrides:
        command += ["--set", item]
    try:
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}:\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        timing = folder / "run" / "timing.json"
        inner = json.loads(timing.read_text())["wall_seconds"] if timing.is_file() else float("nan")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"wall_s": wall, "inner_s": float(inner)}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny overrides instead of the full default")
    parser.add_argument("--repeats", type=int, default=1, help="runs, one after the other (median)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = (QUICK if args.quick else []) + args.overrides
    load_before = os.getloadavg()[0]
    runs = [run_once(overrides) for _ in range(args.repeats)]
    load_after = os.getloadavg()[0]
    wall = statistics.median(r["wall_s"] for r in runs)
    inner = statistics.median(r["inner_s"] for r in runs)
    setting = "cfair run " + " ".join(f"--set {o}" for o in overrides) if overrides else "cfair run"
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(
        f"P4 default experiment wall time: `{setting}` ({args.repeats} run(s), median; "
        f"{os.cpu_count()} CPU cores, OMP_NUM_THREADS={threads}; load average {load_before:.1f} before, "
        f"{load_after:.1f} after)"
    )
    print(f"{'run':>4} {'wall s':>8} {'stages s':>9}")
    for i, r in enumerate(runs):
        print(f"{i:>4} {r['wall_s']:>8.1f} {r['inner_s']:>9.1f}")
    ratio = wall / TARGET_S
    verdict = "met" if wall <= TARGET_S else "MISSED"
    note = "" if not overrides else " (overridden setting: the target applies to the full default)"
    print(f"median wall {wall:.1f} s = {ratio:.2f} x target (target <= {TARGET_S:.0f} s: {verdict}){note}")
    return {"wall_s": wall, "inner_s": inner, "ratio": ratio, "target_s": TARGET_S}


if __name__ == "__main__":
    main()
