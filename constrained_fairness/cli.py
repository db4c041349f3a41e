"""The ``cfair`` console script, one subcommand per job:

    cfair run [CONFIG] [KEY=VALUE ...] [--set KEY=VALUE ...] [--output DIR] [--resume [auto]]
              [--force] [--quiet]
        one experiment: dense → GMP → fine-tune per method → report.md, report.html
    cfair reproduce CONFIG [--seeds S ...] [--sparsities S ...] [--set KEY=VALUE ...]
              [--output DIR] [--quiet]
        a config over seeds and sparsities, and the mean ± std table (table.md)
    cfair sweep FILE [--dry-run] [--workers N] [--count N] [--seed S] [--output DIR]
        a wandb-format sweep file, expanded and run here
    cfair compare RUN_DIR|GLOB|SWEEP_DIR ... [--output DIR]
        finished runs side by side: compare.md, compare.html and sparsity curves
    cfair config [CONFIG] [--set KEY=VALUE ...]
        the resolved config, as YAML

A config may name a dataset, model or method of one's own as ``package.module:function``;
modules in the working folder are found. Without CONFIG, ``run`` and ``config`` use the
default experiment on the bundled UCI Adult
data. A user error (bad config, missing file, unusable data) prints one line on stderr and
exits with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .reporting.results import RunResults

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfair", description="Fairness-constrained training and pruning.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment: dense → GMP → fine-tune per method → report")
    run.add_argument(
        "config", nargs="?", default=None, help="YAML config (default: the bundled Adult experiment)"
    )
    run.add_argument(
        "assignments", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, as with --set"
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set finetune.lr=0.01 (repeatable)",
    )
    run.add_argument("--output", default=None, help="run folder (default: <output_dir>/<name>)")
    run.add_argument(
        "--resume",
        nargs="?",
        const="required",
        default=None,
        choices=["auto", "required"],
        help="continue the run in the run folder from its newest valid checkpoint; "
        "--resume auto also starts it there when it has none (for preemptible jobs)",
    )
    run.add_argument(
        "--force", action="store_true", help="with --resume: accept a changed config (with a warning)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    rep = sub.add_parser("reproduce", help="run a config over seeds and sparsities; write a mean ± std table")
    rep.add_argument("config")
    rep.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    rep.add_argument("--sparsities", type=float, nargs="+", default=None, help="default: the config's")
    rep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    rep.add_argument(
        "--output", default=None, help="folder of the runs and table.md (default: <output_dir>/<name>)"
    )
    rep.add_argument("--quiet", action="store_true")
    sw = sub.add_parser("sweep", help="expand a wandb-format sweep file and run it here")
    sw.add_argument("file")
    sw.add_argument("--dry-run", action="store_true", help="list the runs without running them")
    sw.add_argument("--workers", type=int, default=1, help="runs at a time")
    sw.add_argument(
        "--count", type=int, default=None, help="random sweeps: number of runs (default: run_cap)"
    )
    sw.add_argument("--seed", type=int, default=0, help="random sweeps: seed of the draws")
    sw.add_argument("--output", default="runs/sweep", help="folder of the runs")
    cmp = sub.add_parser("compare", help="compare finished runs: one table and sparsity curves (md + html)")
    cmp.add_argument("runs", nargs="+", help="run folders, glob patterns, or folders of runs (a sweep)")
    cmp.add_argument("--output", default="compare", help="folder of compare.md, compare.html and plots/")
    show = sub.add_parser("config", help="print the resolved config")
    show.add_argument("config", nargs="?", default=None)
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def _run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .experiment.runner import run_experiment

    config, assignments = args.config, list(args.assignments)
    if config is not None and "=" in config and not Path(config).exists():  # `cfair run key=value`
        config, assignments = None, [config, *assignments]
    cfg = load_config(config, [*args.overrides, *assignments])
    progress = {"always": True, "never": False}.get(cfg.logging.progress, sys.stderr.isatty())
    resume = {"auto": "auto", "required": True}.get(args.resume, False)
    result = run_experiment(
        cfg, output=args.output, resume=resume, progress=progress and not args.quiet, force=args.force
    )
    if not args.quiet and (result.results.world_size or 1) > 1:
        from .runtime.distributed import rank

        if rank() != 0:
            return 0
    if not args.quiet:
        print(_summary(result.results))
        print(f"run folder: {result.run_dir}  (report.html, report.md, metrics.json, plots/)")
    failed = result.results.failed
    if failed:  # the finished methods are in metrics.json; each failed one is marked with its error
        name, error = next(iter(failed.items()))
        more = f" (and {len(failed) - 1} more method(s); see metrics.json)" if len(failed) > 1 else ""
        print(f"cfair: error: method {name} failed: {error}{more}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import load_config
    from .experiment.run_dir import finished
    from .experiment.runner import run_experiment
    from .reporting.aggregate import write_table

    base = load_config(args.config, args.overrides)
    out = Path(args.output) if args.output else Path(base.output_dir) / base.name
    sparsities = args.sparsities or [base.pruning.sparsity]
    run_dirs = []
    for sparsity in sparsities:
        for seed in args.seeds:
            overrides = [*args.overrides, f"seed={seed}", f"pruning.sparsity={sparsity}"]
            cfg = load_config(args.config, overrides)
            run_dir = out / f"sparsity{sparsity:g}_seed{seed}"
            if not finished(run_dir):  # finished runs are reused, started ones resumed
                run_experiment(cfg, output=run_dir, resume="auto", progress=False)
            run_dirs.append(run_dir)
            if not args.quiet:
                print(f"done: sparsity {sparsity:g}, seed {seed} -> {run_dir}")
    from .runtime.distributed import barrier, rank

    barrier()  # under torchrun: every rank's runs are done, and rank 0 alone writes the table
    if rank() != 0:
        return 0
    table = write_table(run_dirs, out / "table.md")
    if not args.quiet:
        print(table, end="")
        print(f"table: {out / 'table.md'}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .experiment.sweep import build_runs, run_sweep

    runs = build_runs(Path(args.file), Path(args.output), args.count, args.seed)
    for run in runs:
        print(f"{run.name}: {' '.join(run.overrides)}")
    if args.dry_run:
        print(f"{len(runs)} runs (dry run)")
        return 0
    codes = run_sweep(runs, args.workers)
    failed = [r.name for r, c in zip(runs, codes, strict=True) if c != 0]
    print(f"{len(runs) - len(failed)} of {len(runs)} runs finished; folder {args.output}")
    if failed:
        print(f"cfair: error: runs {', '.join(failed)} failed; see their output above", file=sys.stderr)
        return 1
    return 0


def _summary(results: RunResults) -> str:
    from .reporting.markdown import fmt
    from .reporting.results_view import (
        infeasibility_note,
        max_eag_rows,
        method_label,
        min_group_size_of,
        selection_note,
    )

    labels = {name: method_label(name, m) for name, m in results.items()}
    width = max([8, *map(len, labels.values())])
    lines = [
        f"sparsity {results.sparsity:.3f}, tolerance ε = {results.tolerance}, "
        f"wall time {results.wall_seconds:.1f} s",
        f"{'method':<{width}} {'train acc':>9} {'train maxEAG':>12} {'test acc':>9} {'test maxEAG':>11}",
    ]
    for name, m in results.items():
        if m.error is not None:
            lines.append(f"{labels[name]:<{width}} failed: {m.error}")
            continue
        train, test = m.split("train"), m.split("test")
        lines.append(
            f"{labels[name]:<{width}} {fmt(train.accuracy):>9} {fmt(train.max_eag):>12} "
            f"{fmt(test.accuracy):>9} {fmt(test.max_eag):>11}"
        )
    size = min_group_size_of(results)
    for method, split, everywhere, large in max_eag_rows(results, fmt):
        if split in ("train", "test"):
            lines.append(f"{method} {split} max EAG: {everywhere}; over groups of n >= {size}: {large}")
    lines += [selection_note(name, code=str, em=str) for name in results.methods_selected_on_test]
    notes = (infeasibility_note(name, m, results.tolerance) for name, m in results.items())
    lines += [note for note in notes if note is not None]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # a config may name the user's own functions as package.module:function: find modules in the
    # working folder, as `python -m` would (the cfair script's own folder is the venv's bin/)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "reproduce":
            return _reproduce(args)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "compare":
            from .reporting.compare import write_comparison

            report = write_comparison(args.runs, args.output)
            print(f"comparison: {report} (and compare.html, plots/)")
            return 0
        from .config import dump_config, load_config

        print(dump_config(load_config(args.config, args.overrides)), end="")
        return 0
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        # UserError is a ValueError; plain ValueErrors come from torch and Cooper argument checks.
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"cfair: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("cfair: interrupted; continue with --resume auto", file=sys.stderr)
        return 130
