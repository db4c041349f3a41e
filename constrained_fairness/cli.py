"""The ``cfair`` console script.

    cfair run [CONFIG] [--set KEY=VALUE ...] [--output DIR] [--resume] [--quiet]

Without CONFIG it runs the default experiment on the bundled UCI Adult data. A user
error (bad config, missing file, unusable data) prints one line on stderr and exits
with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfair", description="Fairness-constrained training and pruning.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment: dense → GMP → fine-tune per method → report")
    run.add_argument(
        "config", nargs="?", default=None, help="YAML config (default: the bundled Adult experiment)"
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
        "--resume", action="store_true", help="continue the run in the run folder from its checkpoints"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    show = sub.add_parser("config", help="print the resolved config")
    show.add_argument("config", nargs="?", default=None)
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def _run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .protocol import run_experiment

    cfg = load_config(args.config, args.overrides)
    progress = {"always": True, "never": False}.get(cfg.logging.progress, sys.stderr.isatty())
    result = run_experiment(cfg, output=args.output, resume=args.resume, progress=progress and not args.quiet)
    if not args.quiet:
        print(_summary(result.metrics))
        print(f"run folder: {result.run_dir}  (report.md, metrics.json, plots/)")
    return 0


def _summary(metrics: dict) -> str:
    eps = metrics["tolerance"]
    lines = [
        f"sparsity {metrics['sparsity']:.3f}, tolerance ε = {eps}, wall time {metrics['wall_seconds']:.1f} s",
        f"{'method':<8} {'train acc':>9} {'train maxEAG':>12} {'test acc':>9} {'test maxEAG':>11}",
    ]
    for name, m in metrics["methods"].items():
        lines.append(
            f"{name:<8} {m['train']['accuracy']:>9.4f} {m['train']['max_eag']:>12.4f} "
            f"{m['test']['accuracy']:>9.4f} {m['test']['max_eag']:>11.4f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        from .config import dump_config, load_config

        print(dump_config(load_config(args.config, args.overrides)), end="")
        return 0
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        # UserError is a ValueError; plain ValueErrors come from torch and Cooper argument checks.
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"cfair: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("cfair: interrupted; continue with --resume", file=sys.stderr)
        return 130
