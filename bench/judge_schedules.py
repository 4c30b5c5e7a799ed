"""Pairing schedules under a noisy simulated judge: cost and best/worst agreement with round robin.

No server. Each pool holds K rollouts + the original suffix (n = K + 1, the original at index 0,
the pivot of the pivot schedule). A hidden total order over the candidates is drawn per pool; the
simulated judge answers each unordered pair ONCE per pool (like a greedy, cached judge) with the
true winner, flipped with probability ``noise``. Every schedule asks this same judge, so
round robin's verdict is exactly what the paper's all-pairs judging would have produced and the
agreement columns measure what a cheaper schedule loses against it. best / worst are picked by
``rlpt_plugin.rl.pool.select`` (the trainer's own tie rule: first maximum, last minimum; an
all-tied pool selects nothing). Columns:

    calls     judge calls per prefix (one presentation order, one sample; position="both"
              doubles it, samples_per_judgment multiplies it)
    best=RR   fraction of pools where the schedule's best == round robin's best (worst=RR same)
    best=true fraction of pools where the schedule's best is the truly best candidate (worst same)

    .venv/bin/python bench/judge_schedules.py [--pools 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlpt_plugin.judge.schedules import SCHEDULES, drive, make_schedule  # noqa: E402
from rlpt_plugin.rl.pool import CandidateGroup, select  # noqa: E402


def best_worst(scores: list[float], kinds: tuple[str, ...]) -> tuple[int | None, int | None]:
    group = CandidateGroup((0,), tuple((k + 1,) for k in range(len(scores))), kinds, tuple(scores), None, 0)
    sel = select(group)
    return sel.chosen, sel.rejected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=2000, help="random pools per (K, noise) cell")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    ks, noises = (4, 8, 16), (0.0, 0.1, 0.2)
    header = f"{'schedule':<12} {'K':>3} {'noise':>5} {'calls':>7} {'best=RR':>8} {'worst=RR':>9} {'best=true':>10} {'worst=true':>11}"
    print(f"judge schedules: {args.pools} pools per row, pool = K rollouts + original, seed {args.seed}")
    print(header)
    print("-" * len(header))
    for k in ks:
        n = k + 1
        kinds = ("original",) + ("rollout",) * k
        for noise in noises:
            tally = {name: [0, 0, 0, 0, 0] for name in SCHEDULES}  # calls, best=RR, worst=RR, best=true, worst=true
            for _ in range(args.pools):
                strength = list(range(n))
                rng.shuffle(strength)
                true_best, true_worst = strength.index(n - 1), strength.index(0)
                answers: dict[tuple[int, int], float] = {}
                for i in range(n):
                    for j in range(i + 1, n):
                        win = strength[i] > strength[j]
                        if rng.random() < noise:
                            win = not win
                        answers[(i, j)] = float(win)
                        answers[(j, i)] = 1.0 - float(win)
                sched_seed = rng.randrange(2**31)
                results = {}
                for name in SCHEDULES:
                    s = make_schedule(name, n, seed=sched_seed, pivot=0)
                    scores = drive(s, lambda i, j: answers[(i, j)])
                    results[name] = (s.comparisons, best_worst(scores, kinds))
                rr_best, rr_worst = results["round_robin"][1]
                for name, (calls, (b, w)) in results.items():
                    t = tally[name]
                    t[0] += calls
                    t[1] += b == rr_best
                    t[2] += w == rr_worst
                    t[3] += b == true_best
                    t[4] += w == true_worst
            for name in SCHEDULES:
                calls, b_rr, w_rr, b_t, w_t = (x / args.pools for x in tally[name])
                print(f"{name:<12} {k:>3} {noise:>5.2f} {calls:>7.1f} {b_rr:>8.3f} {w_rr:>9.3f} {b_t:>10.3f} {w_t:>11.3f}")
        print()
    print(f"elapsed {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
