"""P5: replay-buffer push + query time, the library's ReplayBuffer vs per-group deques.

One call = push one batch of b = 256 per-sample values (0/1 correctness, as CEAG pushes)
with their group ids among G = 100 groups, then query the per-group mean of every full
buffer (k = 40), as ``GroupStatisticConstraint.compute`` does: the ids of the full groups
and their means. The reference keeps one ``collections.deque(maxlen=k)`` per group, appends
each sample's value to its group's deque and averages the full deques. Both process the
same random stream; the benchmark first checks, after every batch of a verification pass,
that both give the same full groups and means (``allclose``), so they do equal work.
Timed interleaved in one process: each repetition is the mean over a block of calls,
the median of the repetitions is reported. Target: library push + query ≤ 0.1 ms.

    python benchmarks/replay_buffer.py            # full setting
    python benchmarks/replay_buffer.py --profile  # + the library's cost per torch op
    python benchmarks/replay_buffer.py --quick    # fewer repetitions (smoke test)
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch

from constrained_fairness.buffer import ReplayBuffer

TARGET_MS = 0.1


class DequeBuffer:
    """The reference: one ``deque(maxlen=k)`` per group."""

    def __init__(self, num_groups: int, size: int) -> None:
        self.size = size
        self.deques = [collections.deque(maxlen=size) for _ in range(num_groups)]

    def push(self, values: torch.Tensor, groups: torch.Tensor) -> None:
        deques = self.deques
        for value, group in zip(values.tolist(), groups.tolist(), strict=True):
            deques[group].append(value)

    def query(self) -> tuple[list[int], list[float]]:
        k = self.size
        ids = [g for g, d in enumerate(self.deques) if len(d) == k]
        return ids, [sum(self.deques[g]) / k for g in ids]


def stream(batches: int, batch: int, groups: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, 2, (batch,), generator=gen).float(),
            torch.randint(0, groups, (batch,), generator=gen),
        )
        for _ in range(batches)
    ]


def verify(data, groups: int, size: int) -> int:
    """Both buffers over the stream; same full groups and means after every batch."""
    ours, ref = ReplayBuffer(groups, size), DequeBuffer(groups, size)
    checked = 0
    for values, g in data:
        ours.push(values, g)
        ref.push(values, g)
        ids, means = ours.full_means()
        ref_ids, ref_means = ref.query()
        assert ids.tolist() == ref_ids, "the two buffers disagree on which groups are full"
        assert torch.allclose(means, torch.tensor(ref_means, dtype=means.dtype), atol=1e-6)
        checked += len(ref_ids)
    assert checked > 0, "no buffer ever filled: use a longer stream"
    return checked


def profile(data, groups: int, size: int, top: int = 12) -> dict[str, float]:
    """torch.profiler over the library's calls: self CPU time per op, per call and share."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    buffer = ReplayBuffer(groups, size)
    for values, g in data:  # fill, warm up
        buffer.push(values, g)
        buffer.full_means()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for values, g in data:
            buffer.push(values, g)
            buffer.full_means()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    print(
        f"\nprofile of ReplayBuffer push + query (torch.profiler, {len(data)} calls; "
        f"{total / 1e3 / len(data):.4f} ms/call under the profiler)"
    )
    print(f"{'op':<26} {'calls/call':>10} {'self ms/call':>12} {'share':>6}")
    shares = {}
    for e in events[:top]:
        shares[e.key] = e.self_cpu_time_total / total
        print(
            f"{e.key:<26} {e.count / len(data):>10.1f} {e.self_cpu_time_total / 1e3 / len(data):>12.4f} "
            f"{100 * shares[e.key]:>5.1f}%"
        )
    return shares


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for the smoke test")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--profile", action="store_true", help="also profile the library's ops")
    args = parser.parse_args(argv)
    repetitions, calls = (3, 50) if args.quick else (21, 500)
    data = stream(calls, args.batch, args.groups, seed=0)
    checked = verify(data, args.groups, args.size)
    ours, ref = ReplayBuffer(args.groups, args.size), DequeBuffer(args.groups, args.size)

    def run_ours() -> None:
        for values, g in data:
            ours.push(values, g)
            ours.full_means()

    def run_ref() -> None:
        for values, g in data:
            ref.push(values, g)
            ref.query()

    run_ours(), run_ref()  # warm up; the buffers are full from here on, as in training
    times: dict[str, list[float]] = {"ours": [], "deque": []}
    for rep in range(repetitions):  # interleaved, ABBA
        for name in ("ours", "deque") if rep % 2 == 0 else ("deque", "ours"):
            fn = run_ours if name == "ours" else run_ref
            start = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - start) / calls)
    ids, means = ours.full_means()  # same stream, same state: the timed buffers agree too
    ref_ids, ref_means = ref.query()
    assert ids.tolist() == ref_ids and torch.allclose(means, torch.tensor(ref_means), atol=1e-6)
    ours_ms, ref_ms = statistics.median(times["ours"]), statistics.median(times["deque"])
    speedup = ref_ms / ours_ms
    print(
        f"P5 replay buffer push + query, b={args.batch}, G={args.groups}, k={args.size} "
        f"({repetitions} interleaved repetitions of {calls} calls, median; "
        f"{torch.get_num_threads()} threads; "
        f"means checked equal on {checked} full-group estimates)"
    )
    print(f"{'buffer':<24} {'ms/call':>8}")
    print(f"{'ReplayBuffer (library)':<24} {ours_ms:>8.4f}")
    print(f"{'per-group deque':<24} {ref_ms:>8.4f}")
    verdict = "met" if ours_ms <= TARGET_MS else "MISSED"
    print(
        f"library speed-up over deque = {speedup:.2f}x; library {ours_ms:.4f} ms/call "
        f"(target <= {TARGET_MS} ms: {verdict})"
    )
    result = {"ours_ms": ours_ms, "deque_ms": ref_ms, "speedup": speedup, "checked": float(checked)}
    if args.profile:
        result["profile"] = profile(data, args.groups, args.size)
    return result


if __name__ == "__main__":
    main()
