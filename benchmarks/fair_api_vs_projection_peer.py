"""Our ``fairness_training``-style API against ``fairness-training`` 0.1.0, side by side on Adult.

The data is UCI Adult prepared as in the guide's example (``adult_guide.py``: sex and race
as binary protected columns 0 and 1, a 60/20/20 split stratified on the label). Every
method gets the guide's small-batch settings: an MLP 128-64-32 with one logit, bounds
(−10, 10), ε = 0.05 on both attributes, training batches of 2000 (stratified), b_tau =
2000, Adam at 1e-3, ``ReduceLROnPlateau(patience=5, factor=0.5)``, early stopping after 15
epochs, ``--epochs`` (default 30) epochs:

* ``ours (default)``: ``FairModel`` with its default enforcement (``auto``: projection);
* ``ours (lagrangian)``: ``enforcement='lagrangian'`` (Cooper, nuPI duals, ``dual_lr=1.0``);
* ``peer``: ``fairness_training`` 0.1.0 with ``eta_0=0.5``, as its example.

For each it prints test accuracy and each attribute's pooled test gap with the test set
predicted in batches of 64 (in order; the peer's online primal-dual runs from a reset) and
in one batch, the sampling allowance ``z_a·SE_a`` of each gap at 95 % (``fair_api/guarantee``,
from the 64-batch scores, so comparable across methods), the fit time and the peak RSS of
the process (each method and seed runs in a fresh subprocess). Seeds set torch and the split.

The peer is optional: ``pip install "constrained_fairness[peer]"`` (``fairness-training``,
``cvxpylayers``, ``diffcp``, ``ecos``); without it only our rows are printed.

    python benchmarks/fair_api_vs_projection_peer.py                 # seeds 0 1 2
    python benchmarks/fair_api_vs_projection_peer.py --quick         # 1 seed, 2 epochs (smoke)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn, optim
from torch.optim.lr_scheduler import ReduceLROnPlateau

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adult_guide import AdultSplits, adult_guide_splits

METHODS = ("ours (default)", "ours (lagrangian)", "peer")
EPS, BOUNDS, HIDDEN, BATCH, B_TAU, SMALL = 0.05, (-10.0, 10.0), [128, 64, 32], 2000, 2000, 64
ATTRIBUTES = ("sex", "race")


def plateau(optimizer: optim.Optimizer) -> ReduceLROnPlateau:
    return ReduceLROnPlateau(optimizer, patience=5, factor=0.5)


def peer_available() -> bool:
    try:
        import fairness_training  # noqa: F401
    except ImportError:
        return False
    return True


def test_metrics(scores_small: np.ndarray, scores_one: np.ndarray, data: AdultSplits) -> dict[str, Any]:
    """Accuracy and per-attribute gaps of the test scores (batches of 64, and one batch)."""
    from constrained_fairness.fair_api.guarantee import gap_statistics

    groups = torch.as_tensor(data.X_test[:, :2]).long()
    sizes = torch.tensor([2, 2])
    small = gap_statistics(torch.as_tensor(scores_small), groups, sizes)
    one = gap_statistics(torch.as_tensor(scores_one), groups, sizes)
    labels = data.y_test > 0.5
    return {
        "accuracy": float(((scores_small > 0) == labels).mean()),
        "accuracy_one_batch": float(((scores_one > 0) == labels).mean()),
        "gaps_64": small.gaps.tolist(),
        "gaps_one_batch": one.gaps.tolist(),
        "allowances_64": small.allowances().tolist(),
    }


def fit_ours(enforcement: str, data: AdultSplits, seed: int, epochs: int) -> tuple[Any, float]:
    from constrained_fairness import FairModel, FairTrainer, create_stratified_dataloaders

    train, val = create_stratified_dataloaders(
        data.X_train,
        data.y_train,
        data.X_val,
        data.y_val,
        protected_attr_idx=[0, 1],
        batch_size_train=BATCH,
        batch_size_eval=BATCH,
        seed=seed,
    )
    kwargs = {} if enforcement == "default" else {"enforcement": enforcement}
    model = FairModel(
        input_dim=data.X_train.shape[1],
        hidden_dims=HIDDEN,
        output_dim=1,
        protected_attr_idx=[0, 1],
        prediction_bounds=BOUNDS,
        fairness_tolerance=EPS,
        b_tau=B_TAU,
        fairness_metric="mean_pred",
        **kwargs,
    )
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    trainer = FairTrainer(
        model,
        nn.BCEWithLogitsLoss(),
        optimizer,
        scheduler=plateau(optimizer),
        early_stopping_patience=15,
        device="cpu",
    )
    start = time.perf_counter()
    trainer.fit(train, val, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    model.eval()
    return model, seconds


def predict_ours(model: Any, X: torch.Tensor, batch: int) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(x) for x in X.split(batch)]).reshape(-1).numpy()


def fit_peer(data: AdultSplits, seed: int, epochs: int) -> tuple[Any, float]:
    import contextlib
    import io

    from fairness_training import FairModel, FairTrainer
    from fairness_training.utils import create_stratified_dataloaders

    train, val = create_stratified_dataloaders(
        data.X_train,
        data.y_train,
        data.X_val,
        data.y_val,
        protected_attr_idx=[0, 1],
        batch_size_train=BATCH,
        batch_size_eval=BATCH,
    )
    model = FairModel(
        input_dim=data.X_train.shape[1],
        hidden_dims=HIDDEN,
        output_dim=1,
        protected_attr_idx=[0, 1],
        prediction_bounds=BOUNDS,
        fairness_tolerance=EPS,
        b_tau=B_TAU,
        eta_0=0.5,
        fairness_metric="mean_pred",
    )
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    trainer = FairTrainer(
        model,
        nn.BCEWithLogitsLoss(),
        optimizer,
        scheduler=plateau(optimizer),
        early_stopping_patience=15,
    )
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit(train, val, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    model.eval()
    return model, seconds


def predict_peer(model: Any, X: torch.Tensor, batch: int) -> np.ndarray:
    model.reset_inference_state()
    with torch.no_grad():
        return torch.cat([model(x, inference=True) for x in X.split(batch)]).reshape(-1).numpy()


def run_one(method: str, seed: int, epochs: int) -> dict[str, Any]:
    """One method and seed, in this process: the fit, the test predictions, the metrics."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = adult_guide_splits(seed)
    X = torch.as_tensor(data.X_test)
    if method == "peer":
        model, seconds = fit_peer(data, seed, epochs)
        small, one = predict_peer(model, X, SMALL), predict_peer(model, X, len(X))
    else:
        enforcement = "default" if method == "ours (default)" else "lagrangian"
        model, seconds = fit_ours(enforcement, data, seed, epochs)
        small, one = predict_ours(model, X, SMALL), predict_ours(model, X, len(X))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "seed": seed,
        "fit_s": seconds,
        "peak_rss_mib": peak_mib,
        **test_metrics(small, one, data),
    }


def run_isolated(method: str, seed: int, epochs: int) -> dict[str, Any]:
    """``run_one`` in a fresh interpreter, so the peak RSS is that method's alone."""
    command = [sys.executable, __file__, "--one", method, "--seed", str(seed), "--epochs", str(epochs)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict[str, Any]]) -> str:
    """One line per method: the median over seeds, and each seed's value in brackets."""
    lines = [
        f"{'method':<18} {'test acc':>24} {'gap 64 sex / race':>30} {'gap 1 batch sex / race':>24} "
        f"{'allowance sex / race':>21} {'≤ ε+allow.':>10} {'fit s':>7} {'peak MiB':>9}"
    ]
    for method in METHODS:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue

        def med(key: str, i: int | None = None, rows: list = rows) -> float:
            return statistics.median(r[key] if i is None else r[key][i] for r in rows)

        worst = max(max(r["gaps_64"]) for r in rows)
        within = sum(
            g <= EPS + a for r in rows for g, a in zip(r["gaps_64"], r["allowances_64"], strict=True)
        )
        accs = ", ".join(f"{r['accuracy']:.4f}" for r in rows)
        lines.append(
            f"{method:<18} {med('accuracy'):>7.4f} ({accs}) "
            f"{med('gaps_64', 0):>12.3f} / {med('gaps_64', 1):.3f} [max {worst:.3f}]"
            f"{med('gaps_one_batch', 0):>12.3f} / {med('gaps_one_batch', 1):.3f} "
            f"{med('allowances_64', 0):>13.3f} / {med('allowances_64', 1):.3f} "
            f"{within:>6} of {2 * len(rows)}"
            f"{med('fit_s'):>7.1f} {med('peak_rss_mib'):>9.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="seed 0, 2 epochs, ours only (smoke test)")
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.seed, args.epochs)))
        return []
    if args.quick:
        results = [run_one(m, 0, 2) for m in METHODS[:2]]
    else:
        methods = METHODS if peer_available() else METHODS[:2]
        if "peer" not in methods:
            print('fairness-training is not installed (pip install "constrained_fairness[peer]"): ours only')
        results = [run_isolated(m, s, args.epochs) for s in args.seeds for m in methods]
    epochs, seeds = (2, [0]) if args.quick else (args.epochs, args.seeds)
    print(
        f"UCI Adult (guide preparation), eps={EPS}, {epochs} epochs, seeds {seeds}: "
        "medians, and each seed's accuracy"
    )
    print(table(results))
    return results


if __name__ == "__main__":
    main()
