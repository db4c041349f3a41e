"""Reading a run's ``metrics.json``: its splits, methods and groups, with the NFT+ES selection
marks, tolerant of files written by older versions (absent keys read as missing)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..data.splits import SPLITS
from ..metrics import finite_or_none

TEST_SELECTED_MARK = "†"
"""Mark of a method selected on the test split (its test numbers are optimistic)."""


def is_feasible(max_eag: Any, tolerance: Any) -> bool | None:
    """``max_eag ≤ ε``; ``None`` when either value is missing."""
    m, eps = finite_or_none(max_eag), finite_or_none(tolerance)
    if m is None or eps is None:
        return None
    return m <= eps


def splits_of(metrics: Mapping) -> tuple[str, ...]:
    """The evaluated splits of a run, in order: ``metrics["splits"]`` (e.g. ``("train", "test")``
    for a run without a validation split), or ``("train", "val", "test")`` when the key is absent
    (metrics files written before it existed)."""
    splits = metrics.get("splits")
    if splits is None:
        return SPLITS
    if isinstance(splits, (str, bytes)) or not isinstance(splits, Sequence):
        raise TypeError(f"metrics['splits'] must be a list of split names, got {splits!r}")
    out: list[str] = []
    for split in splits:
        if not isinstance(split, str) or not split:
            raise TypeError(f"metrics['splits'] must be a list of split names, got {splits!r}")
        if split not in out:
            out.append(split)
    return tuple(out)


def selected_on_test(entry: Any) -> bool:
    """Whether a method entry was selected on the test split (``"selected_on": "test"``)."""
    return isinstance(entry, Mapping) and entry.get("selected_on") == "test"


def method_label(name: Any, entry: Any) -> str:
    """``name``, followed by ``†`` when the method was selected on the test split."""
    return f"{name} {TEST_SELECTED_MARK}" if selected_on_test(entry) else str(name)


def selection_note(
    name: str,
    code: Callable[[str], str] = lambda s: f"`{s}`",
    em: Callable[[str], str] = lambda s: f"*{s}*",
) -> str:
    """The footnote of a method selected on test; ``code``/``em`` format the name and the
    emphasis (markdown by default)."""
    if name.startswith("nft_es"):
        what = f"the best NFT epoch by {em('test')} accuracy, as in the reference code"
    else:
        what = f"selected by {em('test')} accuracy"
    return f"{TEST_SELECTED_MARK} {code(name)}: {what}; its test numbers are optimistic (test-set leak)."


def methods_selected_on_test(metrics: Mapping) -> list[str]:
    """The methods of a run selected on the test split, in order."""
    return [name for name, entry in methods_of(metrics).items() if selected_on_test(entry)]


def selection_notes(metrics: Mapping) -> list[str]:
    """One markdown footnote per method selected on the test split (none in a normal run)."""
    return [selection_note(name) for name in methods_selected_on_test(metrics)]


def methods_of(metrics: Mapping) -> dict[str, Mapping]:
    methods = metrics.get("methods") or {}
    if not isinstance(methods, Mapping):
        raise TypeError(f"metrics['methods'] must map method names to results, got {type(methods)}")
    return {str(k): (v if isinstance(v, Mapping) else {}) for k, v in methods.items()}


def split_of(entry: Mapping | None, split: str) -> Mapping:
    if not isinstance(entry, Mapping):
        return {}
    out = entry.get(split)
    return out if isinstance(out, Mapping) else {}


def groups_of(split_entry: Mapping) -> Mapping:
    out = split_entry.get("groups")
    return out if isinstance(out, Mapping) else {}


def group_of(split_entry: Mapping, group: str) -> Mapping:
    out = groups_of(split_entry).get(group)
    return out if isinstance(out, Mapping) else {}


def resolve_group_names(metrics: Mapping, group_names: Sequence[str]) -> list[str]:
    """``group_names``, followed by any group found in ``metrics`` but not listed there."""
    names = [str(g) for g in group_names]
    seen = set(names)
    sources = [metrics.get("dense"), *methods_of(metrics).values()]
    for entry in sources:
        for split in splits_of(metrics):
            for g in groups_of(split_of(entry, split)):
                if str(g) not in seen:
                    seen.add(str(g))
                    names.append(str(g))
    return names


def group_count(metrics: Mapping, split: str, group: str) -> int | None:
    """Samples of ``group`` in ``split``: from the dense results, else the first method that has it."""
    sources = [metrics.get("dense"), *methods_of(metrics).values()]
    for entry in sources:
        n = finite_or_none(group_of(split_of(entry, split), group).get("n"))
        if n is not None:
            return int(n)
    return None


def dense_group_accuracy(metrics: Mapping, split: str, group: str) -> float | None:
    """``acc_d[g]``: from ``metrics['dense']``, else the ``dense_accuracy`` stored with a method."""
    acc = finite_or_none(group_of(split_of(metrics.get("dense"), split), group).get("accuracy"))
    if acc is not None:
        return acc
    for entry in methods_of(metrics).values():
        acc = finite_or_none(group_of(split_of(entry, split), group).get("dense_accuracy"))
        if acc is not None:
            return acc
    return None


def present_groups(metrics: Mapping, split: str, group_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split the groups into ``(present, empty)`` for ``split``.

    A group is present when its count ``n > 0``; when no count is recorded anywhere, it is present
    iff some method reports a non-missing EAG for it.
    """
    present, empty = [], []
    for g in resolve_group_names(metrics, group_names):
        n = group_count(metrics, split, g)
        if n is None:
            has_value = any(
                finite_or_none(group_of(split_of(e, split), g).get("eag")) is not None
                for e in methods_of(metrics).values()
            )
            (present if has_value else empty).append(g)
        else:
            (present if n > 0 else empty).append(g)
    return present, empty


def verdict_entries(metrics: Mapping) -> list[tuple[str, str, str, Mapping[str, list[str]]]]:
    """``(method, split, constraint, groups by verdict)`` for every verdict of a run."""
    return [
        (method, split, name, verdict.get("groups", {}))
        for method, entry in methods_of(metrics).items()
        for split in splits_of(metrics)
        for name, verdict in (split_of(entry, split).get("verdicts") or {}).items()
    ]


def comparison_split(metrics: Mapping) -> str:
    """The split of the dense-vs-sparse plot: test, else the last evaluated split."""
    splits = splits_of(metrics)
    return "test" if "test" in splits or not splits else splits[-1]


def constraint_names(metrics: Mapping) -> list[str]:
    """Names of the declared constraints reported in ``metrics`` (any method), in order."""
    names: list[str] = []
    for entry in methods_of(metrics).values():
        for name in entry.get("constraints", {}) or {}:
            if name not in names:
                names.append(str(name))
    return names


def constraint_split(entry: Mapping, name: str, split: str) -> Mapping:
    out = ((entry.get("constraints") or {}).get(name) or {}).get(split)
    return out if isinstance(out, Mapping) else {}
