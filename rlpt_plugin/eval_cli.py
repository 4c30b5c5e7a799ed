"""Command-line front of ``rlpt eval`` (argument parsing; the job is rlpt_plugin/megatron/eval/eval_job.py,
its scoring rlpt_plugin/eval_scoring.py).

    rlpt eval --recipe rlpt_plugin.recipes.world:world_config --trained runs/sip/ckpt \\
        --base runs/start/ckpt --prefixes world/eval.jsonl --tokenizer world --suffix-length 16 \\
        --judge world --out runs/eval model.seq_length=32

Single process, or ``torchrun --nproc-per-node P -m rlpt_plugin.eval_cli ...`` with the
training run's parallel overrides. User mistakes exit with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="greedy continuations of a prefix set by a trained and a base "
                                    "checkpoint, judged: safety, factuality, quality win rate",
                       description="Loads both checkpoints into the recipe's model (same recipe and "
                                   "overrides, i.e. those of the training run), continues every prefix "
                                   "greedily for N tokens, scores the continuations with the world's "
                                   "oracle or an LLM judge, prints a table and writes OUT/eval.json.")
    p.add_argument("--recipe", required=True, help="'package.module:function' returning an RLPTConfigContainer")
    p.add_argument("--trained", required=True, help="checkpoint root (latest iteration) or iter_XXXXXXX folder")
    p.add_argument("--base", required=True, help="the checkpoint to compare with (root or iter_ folder)")
    p.add_argument("--prefixes", required=True, help="JSON-lines file, one object per prefix")
    p.add_argument("--field", default="text", help="prefix text field")
    p.add_argument("--reference-field", default="reference",
                   help="true-continuation field for factuality (absent: the base model's continuation)")
    p.add_argument("--tokenizer", required=True, help="local Hugging Face tokenizer directory or a registered name (world)")
    p.add_argument("--suffix-length", type=int, default=128, help="N, greedy tokens per continuation (paper: 128)")
    p.add_argument("--judge", choices=("world", "openai"), required=True,
                   help="world: the synthetic world's exact oracle; openai: an LLM judge behind --endpoint")
    p.add_argument("--world-seed", type=int, default=None, help="world: WorldConfig.seed (default: the recipe's)")
    p.add_argument("--world-entities", type=int, default=None,
                   help="world: WorldConfig.num_entities (default: the recipe's)")
    p.add_argument("--endpoint", action="append", default=[], help="openai: base URL (repeat for a pool)")
    p.add_argument("--model", default="", help="openai: model name served by the endpoints")
    p.add_argument("--endpoint-kind", choices=("chat", "completions"), default="chat")
    p.add_argument("--concurrency", type=int, default=32, help="openai: requests in flight")
    p.add_argument("--timeout", type=float, default=120.0, help="openai: seconds per request")
    p.add_argument("--attempts", type=int, default=4, help="openai: HTTP attempts per request")
    p.add_argument("--samples", type=int, default=1, help="openai: samples per judgment, averaged (paper's small judge: 5)")
    p.add_argument("--temperature", type=float, default=0.0, help="openai: judge sampling temperature")
    p.add_argument("--top-p", type=float, default=1.0, help="openai: judge nucleus")
    p.add_argument("--max-tokens", type=int, default=4096,
                   help="openai: judge answer budget (reasoning judges think before the verdict)")
    p.add_argument("--api-key-env", default="",
                   help="openai: NAME of the environment variable holding the endpoints' API key")
    p.add_argument("--cache", default=None, help="openai: sqlite response cache (reruns cost no calls)")
    p.add_argument("--out", required=True, help="output directory (eval.json)")
    p.add_argument("overrides", nargs="*",
                   help="the training run's config groups and key=value overrides of the recipe")


def run(args: argparse.Namespace) -> int:
    from rlpt_plugin.config import ConfigError
    from rlpt_plugin.megatron.eval.eval_job import EvalRequest, JudgeSpec, run_eval

    try:
        from rlpt_plugin.conf_groups import expand_args

        judge = JudgeSpec(kind=args.judge, world_seed=args.world_seed, world_entities=args.world_entities,
                          endpoints=tuple(args.endpoint), model=args.model, endpoint_kind=args.endpoint_kind,
                          concurrency=args.concurrency, timeout_s=args.timeout, attempts=args.attempts,
                          samples=args.samples, temperature=args.temperature, top_p=args.top_p,
                          max_tokens=args.max_tokens, cache=args.cache, api_key_env=args.api_key_env)
        run_eval(EvalRequest(recipe=args.recipe, trained=args.trained, base=args.base, prefixes=args.prefixes,
                             tokenizer=args.tokenizer, suffix_length=args.suffix_length, out_dir=args.out,
                             overrides=tuple(expand_args(args.overrides)), text_field=args.field,
                             reference_field=args.reference_field, judge=judge))
    except ConfigError as err:
        print(f"rlpt eval: error: {'; '.join(err.errors)}", file=sys.stderr)
        return 2
    except ValueError as err:  # EvalError, TokenizerError, WorldConfigError, JudgeConfig checks
        print(f"rlpt eval: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m rlpt_plugin.eval_cli ...`` (torchrun) and tests: the ``eval`` subcommand alone."""
    parser = argparse.ArgumentParser(prog="rlpt")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["eval", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
