"""Reading a run's results (:class:`~.results.RunResults`) for the reports: the groups to
show, their counts and dense accuracies, the verdicts, and the NFT+ES selection marks.

Every function takes the typed tree (a ``metrics.json`` dict is read with
:meth:`~.results.RunResults.from_json` first); none reads a string key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..metrics import finite_or_none
from .results import GroupMaximum, MethodResult, RunResults

TEST_SELECTED_MARK = "†"
"""Mark of a method selected on the test split (its test numbers are optimistic)."""


def is_feasible(max_eag: Any, tolerance: Any) -> bool | None:
    """``max_eag ≤ ε``; ``None`` when either value is missing."""
    m, tolerance = finite_or_none(max_eag), finite_or_none(tolerance)
    if m is None or tolerance is None:
        return None
    return m <= tolerance


def marked_label(name: Any, selected_on_test: bool) -> str:
    """``name``, followed by ``†`` when it was selected on the test split."""
    return f"{name} {TEST_SELECTED_MARK}" if selected_on_test else str(name)


def method_label(name: Any, method: MethodResult | None) -> str:
    """``name``, followed by ``†`` when the method was selected on the test split."""
    return marked_label(name, method is not None and method.selected_on_test)


def methods_selected_on_test(runs: Iterable[RunResults]) -> list[str]:
    """The methods selected on the test split in some of ``runs``, in order of first appearance."""
    out: list[str] = []
    for results in runs:
        out += [name for name in results.methods_selected_on_test if name not in out]
    return out


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


def selection_notes(results: RunResults) -> list[str]:
    """One markdown footnote per method selected on the test split (none in a normal run)."""
    return [selection_note(name) for name in results.methods_selected_on_test]


def resolve_group_names(results: RunResults, group_names: Sequence[str]) -> list[str]:
    """``group_names``, followed by any group found in the results but not listed there."""
    names = [str(g) for g in group_names]
    seen = set(names)
    for source in _sources(results):
        for split in results.splits:
            for g in source(split).groups or {}:
                if g not in seen:
                    seen.add(g)
                    names.append(g)
    return names


def _sources(results: RunResults) -> list[Callable[[str], Any]]:
    """The dense results, then each method: each a function of the split."""
    return [results.dense_split, *(m.split for m in results.methods.values())]


def group_count(results: RunResults, split: str, group: str) -> int | None:
    """Samples of ``group`` in ``split``: from the dense results, else the first method that has it."""
    for source in _sources(results):
        n = source(split).group(group).n
        if n is not None:
            return n
    return None


def dense_group_accuracy(results: RunResults, split: str, group: str) -> float | None:
    """``acc_d[g]``: from the dense results, else the ``dense_accuracy`` stored with a method."""
    acc = results.dense_split(split).group(group).accuracy
    if acc is not None:
        return acc
    for method in results.methods.values():
        acc = method.split(split).group(group).dense_accuracy
        if acc is not None:
            return acc
    return None


def present_groups(
    results: RunResults, split: str, group_names: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Split the groups into ``(present, empty)`` for ``split``.

    A group is present when its count ``n > 0``; when no count is recorded anywhere, it is present
    iff some method reports a non-missing EAG for it.
    """
    present, empty = [], []
    for g in resolve_group_names(results, group_names):
        n = group_count(results, split, g)
        if n is None:
            has_value = any(m.split(split).group(g).eag is not None for m in results.methods.values())
            (present if has_value else empty).append(g)
        else:
            (present if n > 0 else empty).append(g)
    return present, empty


def verdict_entries(results: RunResults) -> list[tuple[str, str, str, Mapping[str, list[str]]]]:
    """``(method, split, constraint, groups by verdict)`` for every verdict of a run."""
    return [
        (name, split, constraint, verdict.groups)
        for name, method in results.methods.items()
        for split in results.splits
        for constraint, verdict in method.split(split).verdicts.items()
    ]


def infeasibility_note(
    name: str,
    method: MethodResult,
    tolerance: float | None,
    code: Callable[[str], str] = str,
    strong: Callable[[str], str] = str,
) -> str | None:
    """The line saying why ``method`` ended over ε on train (its ``infeasible`` entry: the
    violating groups, largest EAG first, with sizes, and the advice); ``None`` when it did not.
    ``code`` formats a group name and ``strong`` the verdict (plain text by default)."""
    found = method.infeasible
    if found is None:
        return None
    groups = ", ".join(
        f"{code(g)} (n={v['n']}, EAG {v['eag']:.4f})"
        for g, v in sorted(found["groups"].items(), key=lambda kv: -kv[1]["eag"])
    )
    head = strong(f"{name} is infeasible on train")
    max_eag = method.split("train").max_eag
    return f"{head} (max EAG {max_eag:.4f} > ε = {tolerance:g}) in {groups}; {found['advice']}"


def where_max(maximum: GroupMaximum | None, fmt: Callable[[Any], str]) -> str:
    """``0.0342 in Other|Female (n=80)``; ``–`` when there is no such maximum."""
    if maximum is None or maximum.value is None:
        return "–"
    return f"{fmt(maximum.value)} in {maximum.group} (n={maximum.n})"


def max_eag_rows(results: RunResults, fmt: Callable[[Any], str]) -> list[list[str]]:
    """``[method, split, all groups, groups of n ≥ m]`` per method and split that has the
    maxima (:attr:`~.split_results.SplitResult.max_eag_at`): where each max EAG is."""
    rows = []
    for name, method in results.items():
        for split in results.splits:
            s = method.split(split)
            if s.max_eag_at is None:
                continue
            rows.append(
                [
                    method_label(name, method),
                    split,
                    where_max(s.max_eag_at, fmt),
                    where_max(s.max_eag_min_size, fmt),
                ]
            )
    return rows


def min_group_size_of(results: RunResults) -> int | None:
    """The ``min_group_size`` of the maxima over big enough groups (any method and split)."""
    for method in results.methods.values():
        for s in method.splits.values():
            if s.max_eag_min_size is not None and s.max_eag_min_size.min_group_size is not None:
                return s.max_eag_min_size.min_group_size
    return None


def comparison_split(results: RunResults) -> str:
    """The split of the dense-vs-sparse plot: test, else the last evaluated split."""
    splits = results.splits
    return "test" if "test" in splits or not splits else splits[-1]


def constraint_names(results: RunResults) -> list[str]:
    """Names of the declared constraints reported in the results (any method), in order."""
    names: list[str] = []
    for method in results.methods.values():
        for name in method.constraints or {}:
            if name not in names:
                names.append(name)
    return names
