"""What a SIP step costs against the next-token step it replaces, at two geometries, one run.

Each geometry trains the world recipe through Megatron-Bridge's real ``pretrain()`` twice from
the same random start, on the same store windows: next-token (``rlpt.loss.dpo.start=0``) and
SIP (K rollouts + the original, the world oracle as judge, online DPO + NLL on the chosen, the
FROZEN reference, as ``make demo``'s SIP phase). Per step it records where the time went:

* rollouts: sampling the next step's K rollouts per prefix (staleness 1: done during this step's
  preparation); reference: the frozen reference's forward over the step's micro-batches;
  packing: the rest of the preparation (selection, packing, all-reduce of the counts);
  training: forward, backward and optimizer; judge wait: the trainer blocked on the verdicts
  (the judge runs in the background; EXCLUDED from the ratios).
* model tokens: positions each phase pushes through the model (micro-batch tensors, padding
  included; rollouts: shared prefill + one per decoded token). Forward-token equivalents count a
  trained position as 3 (forward + backward), a reference or rollout token as 1; the FLOOR ratio
  is SIP's equivalents over next-token's, the ratio the step would have if every token cost the
  same as in the next-token step.

Geometries: ``demo`` (make demo: G=16 prefixes, K=8, N=16, seq 32, 4 layers h128) and ``paper``
(paper-shaped on a CPU: seq 512, N=32, K=16 so rollout tokens ~ trained tokens, long documents
made of world documents, prefixes of ~480 tokens; G=8). The model starts from random weights,
so rollouts run to N tokens (the plan's upper bound). Ratios are of medians over the measured
steps (after ``--skip`` warm-up steps). Everything runs in this one process.

Clocks: ``--clock cpu`` (default) times each phase by the CPU seconds of the thread that runs it
(``time.thread_time``) with torch on ONE thread, so every phase runs in that thread and a shared
machine's load does not inflate it; the background judge thread is not counted. ``--clock wall``
uses ``time.perf_counter`` (torch's default threads): what a quiet machine would show. Both are
printed; the last line uses ``--clock``. Judge wait is wall time either way.

    nice .venv/bin/python bench/step_cost.py [--steps 8] [--skip 2] [--prefix-sharing auto|unpacked] [--clock cpu|wall]

The LAST line is ``step_cost demo=<ratio> demo_floor=<ratio> paper=<ratio> paper_floor=<ratio>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("rollouts", "reference", "packing", "training")


@dataclass(frozen=True)
class Geometry:
    name: str
    groups: int
    rollouts: int
    suffix: int
    seq: int
    docs_per_text: int  # world documents joined into one training document (long prefixes)
    min_prefix: int


GEOMETRIES = {
    "demo": Geometry("demo", groups=16, rollouts=8, suffix=16, seq=32, docs_per_text=1, min_prefix=4),
    "paper": Geometry("paper", groups=8, rollouts=16, suffix=32, seq=512, docs_per_text=20, min_prefix=448),
}


def _cost_callback() -> Any:
    from megatron.bridge.training.callbacks import Callback

    class Cost(Callback):
        """Per step: the step source's preparation split and the training seconds."""

        def __init__(self) -> None:
            self.steps: list[dict[str, float]] = []
            self._began = 0.0

        def on_train_step_start(self, context: Any) -> None:  # after the rlpt callback's prepare
            self._began, self._cpu_began = time.perf_counter(), time.thread_time()

        def on_train_step_end(self, context: Any) -> None:
            train_s, train_cpu_s = time.perf_counter() - self._began, time.thread_time() - self._cpu_began
            import torch

            self.threads = torch.get_num_threads()  # the host must not have changed it
            c = dict(context.state.cfg.dataset.train_feed.source.last_cost)
            other = c["prepare_s"] - c["rollout_s"] - c["judge_wait_s"] - c["reference_s"]
            other_cpu = c["prepare_cpu_s"] - c["rollout_cpu_s"] - c["reference_cpu_s"]  # blocked waits cost no CPU
            self.steps.append({"wall:rollouts": c["rollout_s"], "wall:reference": c["reference_s"],
                               "wall:packing": other, "wall:training": train_s,
                               "cpu:rollouts": c["rollout_cpu_s"], "cpu:reference": c["reference_cpu_s"],
                               "cpu:packing": other_cpu, "cpu:training": train_cpu_s,
                               "judge_wait": c["judge_wait_s"], "rollout_tokens": c["rollout_tokens"],
                               "train_positions": c["train_positions"],
                               "reference_positions": c["reference_positions"]})

    return Cost()


def _store(geo: Geometry, root: Path) -> Path:
    """The world corpus (documents joined ``docs_per_text`` at a time), rewritten by the oracle."""
    from rlpt_plugin.cli import main as rlpt
    from rlpt_plugin.demo import DemoSettings, pipeline

    s = DemoSettings(suffix_length=geo.suffix)
    pipeline.build_world(s, root)
    docs = [json.loads(line) for line in (root / "world" / "corpus.jsonl").read_text().splitlines()]
    corpus = root / f"corpus_{geo.name}.jsonl"
    with corpus.open("w") as f:
        for i in range(0, len(docs), geo.docs_per_text):
            f.write(json.dumps({"text": " ".join(d["text"] for d in docs[i:i + geo.docs_per_text])}) + "\n")
    store = root / f"store_{geo.name}"
    if not (store / "manifest.json").exists():
        code = rlpt(["rewrite", "--corpus", str(corpus), "--tokenizer", "world", "--out", str(store),
                     "--teacher", "world", "--world-seed", str(s.world_seed), "--world-entities", str(s.entities),
                     "--suffix-length", str(geo.suffix), "--seq-length", str(geo.seq),
                     "--min-prefix", str(geo.min_prefix), "--windows-per-doc", "4", "--seed", "0"])
        if code != 0:
            raise RuntimeError(f"rlpt rewrite failed with exit code {code}")
    return store


def _train(geo: Geometry, store: Path, out: Path, sip: bool, steps: int, sharing: str) -> list[dict[str, float]]:
    from rlpt_plugin.demo import DemoSettings, pipeline
    from rlpt_plugin.megatron.host import launch

    s = DemoSettings(suffix_length=geo.suffix, groups_per_step=geo.groups, rollouts=geo.rollouts)
    common = [f"rlpt.data.stores=[{store}]", f"rlpt.judge.world_seed={s.world_seed}",
              f"rlpt.judge.world_entities={s.entities}", f"rlpt.data.groups_per_step={geo.groups}",
              f"rng.seed={s.seed}", f"rlpt.data.seed={s.seed}", f"model.seq_length={geo.seq}",
              "logger.log_interval=1000000", f"train.train_iters={steps}", "checkpoint.save=null",
              "checkpoint.load=null", f"rlpt.data.prefix_sharing={sharing}"]
    mode = pipeline.sip_overrides(s, "dpo") if sip else [*pipeline.lm_overrides(s), f"train.micro_batch_size={geo.groups}"]
    cost = _cost_callback()
    launch.train(pipeline.RECIPE, out, [*common, *mode], extra_callbacks=[cost])
    print(f"  ({geo.name} {'SIP' if sip else 'next-token'}: {len(cost.steps)} steps, torch threads "
          f"{cost.threads} while training)")
    return cost.steps


def _medians(steps: list[dict[str, float]], skip: int) -> dict[str, float]:
    kept = steps[skip:] or steps
    return {k: median(s[k] for s in kept) for k in kept[0]}


def _report(geo: Geometry, nt_all: dict[str, float], sip_all: dict[str, float], sharing: str,
            clock: str) -> tuple[float, float]:
    other = "wall" if clock == "cpu" else "cpu"
    alt = sum(sip_all[f"{other}:{p}"] for p in PHASES) / (nt_all[f"{other}:packing"] + nt_all[f"{other}:training"])
    nt = {**nt_all, **{p: nt_all[f"{clock}:{p}"] for p in PHASES}}
    sip = {**sip_all, **{p: sip_all[f"{clock}:{p}"] for p in PHASES}}
    nt_s = nt["packing"] + nt["training"]
    sip_s = sum(sip[p] for p in PHASES)
    nt_eq = 3 * nt["train_positions"]
    tokens = {"rollouts": sip["rollout_tokens"], "reference": sip["reference_positions"], "packing": 0.0,
              "training": sip["train_positions"]}
    eq = {"rollouts": tokens["rollouts"], "reference": tokens["reference"], "packing": 0.0,
          "training": 3 * tokens["training"]}
    ratio, floor = sip_s / nt_s, sum(eq.values()) / nt_eq
    print(f"\n{geo.name}: G={geo.groups} prefixes, K={geo.rollouts}, N={geo.suffix}, seq {geo.seq}; "
          f"rlpt.data.prefix_sharing={sharing}; {clock} seconds")
    print(f"  next-token step: {nt_s:.3f} s (packing {nt['packing']:.3f}, training {nt['training']:.3f}); "
          f"{nt['train_positions']:.0f} positions trained = {nt_eq:.0f} forward-token equivalents")
    print(f"  {'phase':<11}{'seconds':>9}{'x NT step':>11}{'model tokens':>14}{'fwd-eq':>9}{'x NT fwd-eq':>13}"
          f"{'time/floor':>12}")
    for p in PHASES:
        share = eq[p] / nt_eq
        over = f"{(sip[p] / nt_s) / share:>12.2f}" if share else f"{'-':>12}"
        print(f"  {p:<11}{sip[p]:>9.3f}{sip[p] / nt_s:>11.2f}{tokens[p]:>14.0f}{eq[p]:>9.0f}{share:>13.2f}{over}")
    print(f"  {'judge wait':<11}{sip['judge_wait']:>9.3f}{sip['judge_wait'] / nt_s:>11.2f}   (background judge; excluded)")
    print(f"  SIP step {sip_s:.3f} s = {ratio:.2f}x the next-token step; floor {floor:.2f}x; "
          f"{ratio / floor:.2f}x its floor ({other} clock: {alt:.2f}x)")
    return ratio, floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="steps per run (the first --skip are warm-up)")
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--prefix-sharing", default="auto", choices=("auto", "shared", "unpacked"))
    parser.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="step_cost_"))
    root.mkdir(parents=True, exist_ok=True)
    import torch

    if args.clock == "cpu":
        torch.set_num_threads(1)  # every phase's work in the thread whose CPU time is read
    print(f"step_cost: {args.steps} steps per run, medians over the last {args.steps - args.skip}; "
          f"torch threads {torch.get_num_threads()}; work dir {root}")
    results = {}
    for name, geo in GEOMETRIES.items():
        store = _store(geo, root)
        nt = _medians(_train(geo, store, root / f"{name}_nt", False, args.steps, args.prefix_sharing), args.skip)
        sip = _medians(_train(geo, store, root / f"{name}_sip", True, args.steps, args.prefix_sharing), args.skip)
        results[name] = _report(geo, nt, sip, args.prefix_sharing, args.clock)
    (d, df), (p, pf) = results["demo"], results["paper"]
    print(f"step_cost demo={d:.2f} demo_floor={df:.2f} paper={p:.2f} paper_floor={pf:.2f}")


if __name__ == "__main__":
    main()
