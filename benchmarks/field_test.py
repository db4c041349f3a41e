"""Field test: the default experiment on other data, with only the data section changed.

Runs the default config (``cfair run`` with no config) on each data set below, as a new user
would, and prints per data set: training rows and steps per epoch of the sparse stages, NFT's
and CEAG's train and test max EAG over all groups and over the groups of at least
``evaluation.min_group_size`` rows (each with its group and size), CEAG's verdict on train
(feasible, or the reason the summary gives), and the warnings shown.

* ``adult-1k``, ``adult-5k``: UCI Adult subsampled (seeded) to about 1,000 and 5,000 training
  rows (the rows of ``adult.data`` are sampled, 20 % go to validation as in the default; the
  test split is the whole ``adult.test``);
* ``synthetic``: a table whose four groups have about 3, 10, 30 and 300 training rows;
* ``adult``: the full default experiment (its figures are the README demo's).

    python benchmarks/field_test.py                  # every data set (a few minutes on 2 cores)
    python benchmarks/field_test.py --only synthetic adult-1k
    python benchmarks/field_test.py --quick          # the synthetic table, short budgets (smoke test)
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from constrained_fairness.config import load_config, read_yaml
from constrained_fairness.data.adult import ADULT_CATEGORICAL, ADULT_COLUMNS
from constrained_fairness.experiment import run_experiment

ADULT_DIR = Path(__file__).resolve().parents[1] / "constrained_fairness" / "data"
QUIET = ["logging.wandb=disabled", "logging.tensorboard=false", "logging.progress=never"]
QUICK = ["dense.epochs=2", "pruning.epochs=2", "finetune.epochs=2", "evaluation.bootstrap_resamples=50"]


def adult_section(folder: Path, train_rows: int | None, seed: int = 0) -> list[str]:
    """The data section of a CSV of Adult rows (a seeded sample of ``adult.data`` giving about
    ``train_rows`` training rows after the default 20 % validation split), or [] for the full set."""
    if train_rows is None:
        return []
    with gzip.open(ADULT_DIR / "adult.data.gz", "rt") as f:
        lines = f.read().splitlines()
    lines = [line for line in lines if line.strip()]
    keep = np.random.default_rng(seed).choice(len(lines), size=round(train_rows / 0.8), replace=False)
    path = folder / f"adult-{train_rows}.csv"
    path.write_text("\n".join(lines[i] for i in sorted(keep)) + "\n")
    return [
        "data.name=csv",
        f"data.path={path}",
        f"data.test_path={ADULT_DIR / 'adult.test.gz'}",
        "data.target=income",
        'data.positive_value=">50K"',
        "data.header=false",
        f"data.column_names=[{', '.join(ADULT_COLUMNS)}]",
        f"data.categorical=[{', '.join(ADULT_CATEGORICAL)}]",
    ]


def synthetic_section(folder: Path, seed: int = 0) -> list[str]:
    """A table with one protected attribute whose groups have about 3, 10, 30 and 300 training
    rows (each group's rows are split 60/20/20 like the default); the label depends on two
    features and, a little, on the group."""
    rng = np.random.default_rng(seed)
    sizes = {"g3": 5, "g10": 17, "g30": 50, "g300": 500}  # whole table; 60 % of each is train
    rows = ["x1,x2,group,label"]
    for offset, (group, n) in enumerate(sizes.items()):
        x = rng.normal(size=(n, 2))
        score = x[:, 0] + 0.5 * x[:, 1] + 0.3 * offset + rng.normal(scale=0.5, size=n)
        rows += [
            f"{a:.4f},{b:.4f},{group},{'yes' if s > 0.5 else 'no'}"
            for (a, b), s in zip(x, score, strict=True)
        ]
    path = folder / "synthetic.csv"
    path.write_text("\n".join(rows) + "\n")
    return [
        "data.name=csv",
        f"data.path={path}",
        "data.target=label",
        'data.positive_value="yes"',
        "data.protected=[group]",
        "data.categorical=[group]",
        "data.test_fraction=0.2",
    ]


DATASETS = {
    "adult-1k": lambda folder: adult_section(folder, 1000),
    "adult-5k": lambda folder: adult_section(folder, 5000),
    "synthetic": synthetic_section,
    "adult": lambda folder: adult_section(folder, None),
}


def where(maximum: object) -> str:
    if maximum is None or maximum.value is None:
        return "–"
    return f"{maximum.value:.4f} {maximum.group} (n={maximum.n})"


def result_batch(result: object) -> int:
    """The sparse stages' batch size the run used (its resolved config.yaml)."""
    return int(read_yaml(result.run_dir / "config.yaml")["finetune"]["batch_size"])


def field_run(name: str, folder: Path, extra: Sequence[str]) -> dict:
    """Run the default config on one data set; the figures of its row."""
    section = DATASETS[name](folder)
    cfg = load_config(None, [*section, *QUIET, *extra, f"output_dir={folder}", f"name={name}"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_experiment(cfg)
    results = result.results
    train_rows = sum(g.n or 0 for g in results.method("nft").split("train").groups.values())
    steps = -(-train_rows // result_batch(result))
    row = {"data": name, "train rows": train_rows, "batch": result_batch(result), "steps/epoch": steps}
    for method in ("nft", "ceag"):
        m = results.method(method)
        for split in ("train", "test"):
            s = m.split(split)
            row[f"{method} {split} max EAG"] = where(s.max_eag_at)
            row[f"{method} {split} max EAG (n≥{cfg.evaluation.min_group_size})"] = where(s.max_eag_min_size)
    ceag = results.method("ceag")
    row["ceag on train"] = "feasible" if ceag.infeasible is None else ceag.infeasible["advice"]
    shown = {str(w.message).splitlines()[0] for w in caught if issubclass(w.category, UserWarning)}
    row["warnings"] = sorted(shown)
    return row


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(DATASETS), help="run only these data sets")
    parser.add_argument("--quick", action="store_true", help="the synthetic table with short budgets")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    names = ["synthetic"] if args.quick else (args.only or list(DATASETS))
    extra = [*(QUICK if args.quick else []), *args.overrides]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            row = field_run(name, Path(scratch), extra)
            rows.append(row)
            print(
                f"== {name}: {row['train rows']} training rows, batches of {row['batch']}, "
                f"{row['steps/epoch']} steps per epoch"
            )
            for key, value in row.items():
                if key not in ("data", "train rows", "batch", "steps/epoch", "warnings"):
                    print(f"  {key}: {value}")
            for message in row["warnings"]:
                print(f"  warning: {message}")
    return rows


if __name__ == "__main__":
    main()
