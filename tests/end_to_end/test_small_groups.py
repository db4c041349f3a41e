"""Groups with fewer training rows than a replay buffer: named in one warning at the start,
listed in metrics.json and report.md, and left out of the constraint (their multipliers stay 0)."""

from __future__ import annotations

import json
import warnings

from constrained_fairness.config import load_config
from constrained_fairness.experiment import run_experiment

from ..helpers import tiny_config, write_synthetic_csv


def test_groups_below_the_buffer_are_warned_about_listed_and_left_out(tmp_path):
    csv = write_synthetic_csv(tmp_path / "data.csv")
    lines = csv.read_text().splitlines()
    for i in (1, 2, 3, 4):  # four rows of a rare colour: groups purple|F / purple|M of a few rows
        fields = lines[i].split(",")
        fields[3] = "purple"
        lines[i] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    cfg = load_config(tiny_config(tmp_path, csv, methods="[nft, ceag]"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_experiment(cfg, output=tmp_path / "run")
    messages = [str(w.message) for w in caught if "replay buffer" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    train = metrics["methods"]["nft"]["train"]["groups"]
    # by a loop over the training split's groups: 0 < n < buffer_size (8 in the tiny config)
    expected = {g: entry["n"] for g, entry in train.items() if 0 < entry["n"] < 8}
    assert expected and all(g.startswith("purple") for g in expected)
    assert metrics["groups_below_buffer"] == {"ceag": {"buffer_size": 8, "groups": expected}}
    for g, n in expected.items():
        assert f"{g} ({n} row{'s' if n != 1 else ''})" in messages[0]
    assert "merge them, or accept them unconstrained" in messages[0]  # all under min_group_size
    # left out: the multipliers of those groups never moved
    multipliers = dict(zip(metrics["groups"], metrics["methods"]["ceag"]["multipliers"]["ceag"], strict=True))
    assert all(multipliers[g] == 0.0 for g in expected)
    assert any(v > 0 for g, v in multipliers.items() if g not in expected)  # the others were constrained
    assert "Left out of `ceag`" in (tmp_path / "run" / "report.md").read_text()
    assert result.results.groups_below_buffer == metrics["groups_below_buffer"]
