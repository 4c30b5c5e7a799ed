"""``rlpt demo``: the smallest real run of the method, until the synthetic-world demo lands.

The tiny GPT recipe trains through Megatron-Bridge's ``pretrain()`` with the full mixed loss
(next-token NLL on prefix + original suffix, online DPO on best vs worst candidate, RF-NLL on
the best) over the deterministic candidate groups of rlpt_plugin/rl/synthetic.py (counting
prefixes; candidates that keep counting with random corruption, scored by how well they do).
The table shows each term's metric over the first and the last steps. It demonstrates the
mechanism on the real host; the measured comparison with plain next-token pretraining needs a
corpus whose defects are systematic, which is the synthetic world's job (rlpt_plugin/world).
Writes ``OUT/results.json`` and the per-step ``OUT/metrics.jsonl``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import mean

RECIPE = "rlpt_plugin.recipes.tiny:tiny_config"
MIXED = ["rlpt.loss.lm.start=1", "rlpt.loss.dpo.start=1", "rlpt.loss.rf_nll.start=1",
         "rlpt.loss.beta=1.0"]
ROWS = (
    ("LM NLL on the original text (per token)", "lm_nll", "lower"),
    ("NLL of the best candidate (per token)", "rf_nll", "lower"),
    ("log p(chosen) - log p(rejected)", "gap", "higher"),
)


def _summary(records: list[dict[str, float]]) -> dict[str, float]:
    return {"lm_nll": mean(r["lm_nll"] for r in records), "rf_nll": mean(r["rf_nll"] for r in records),
            "gap": mean(r["chosen_logp"] - r["rejected_logp"] for r in records)}


def run_demo(out_dir: str | Path, overrides: list[str], steps: int = 40) -> dict:
    from rlpt_plugin.megatron import launch

    out = Path(out_dir)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    print(f"[demo] training the tiny GPT for {steps} steps with LM + DPO + RF-NLL through "
          "Megatron-Bridge's pretrain() ...", flush=True)
    began = time.perf_counter()
    records = launch.train(RECIPE, out, [f"train.train_iters={steps}", "checkpoint.save=null",
                                         "checkpoint.load=null", *MIXED, *overrides])
    window = max(1, len(records) // 8)
    results = {"steps": len(records), "window": window, "first": _summary(records[:window]),
               "last": _summary(records[-window:]), "seconds": round(time.perf_counter() - began, 1)}
    print(f"\nmean over the first and the last {window} of {len(records)} steps "
          f"({results['seconds']} s, metrics of every step in {out / 'metrics.jsonl'}):")
    print(f"{'metric':<42}{'first':>10}{'last':>10}   better")
    for label, key, better in ROWS:
        print(f"{label:<42}{results['first'][key]:>10.3f}{results['last'][key]:>10.3f}   {better}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results
