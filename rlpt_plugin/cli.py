"""``rlpt``: the plugin's command line.

    rlpt train --recipe rlpt_plugin.recipes.tiny:tiny_config --out runs/x rlpt.loss.beta=0.05
    rlpt demo  [--out DIR] [--seed S] [--rollouts K] [--steps N] [--loss dpo|rf_nll] ...
    rlpt eval  --recipe R --trained runs/sip/ckpt --base runs/start/ckpt --prefixes p.jsonl --judge world ...
    rlpt rewrite --corpus data/*.jsonl --tokenizer tok/ --out store/ --endpoint http://h:8000/v1 --model m

Heavy imports (torch, megatron) happen only inside the command that needs them.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_RECIPE = "rlpt_plugin.recipes.tiny:tiny_config"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlpt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run a recipe through Megatron-Bridge's pretrain()")
    train.add_argument("--recipe", default=DEFAULT_RECIPE,
                       help="'package.module:function' returning an RLPTConfigContainer")
    train.add_argument("--out", default="runs/train", help="output directory (checkpoints, metrics)")
    train.add_argument("--dry-run", action="store_true",
                       help="print the resolved config and the per-step workload plan; train nothing")
    train.add_argument("--step-time", type=float, default=10.0,
                       help="--dry-run: the trainer step time (s) the judge must keep up with")
    train.add_argument("--suffix-length", type=int, default=128,
                       help="--dry-run: N when the stores do not exist yet (paper: 128)")
    train.add_argument("--gpus", type=int, default=8,
                       help="--dry-run: H100s to estimate the step's split on (paper: 64)")
    train.add_argument("overrides", nargs="*",
                       help="config groups (group=option: teacher, judge, loss, candidates, world; "
                            "see rlpt_plugin/conf/) and Hydra-syntax overrides key=value, applied in "
                            "that order, so key=value wins")
    demo = sub.add_parser("demo", help="self-improving vs next-token pretraining on the synthetic world, "
                                       "trained with an honest (imperfect) teacher, graded exactly (the embedded default)",
                          description="Builds the synthetic world, rewrites its corpus with the honest teacher "
                                      "(rlpt rewrite), pretrains a start model, continues it with next-token "
                                      "prediction and with self-improving pretraining through Megatron-Bridge's "
                                      "pretrain(), evaluates greedy continuations of held-out prefixes with the "
                                      "oracle and prints the table; OUT/results.json and plots hold every number. "
                                      "Rerun with the same --out to resume.",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    from rlpt_plugin.demo.settings import add_arguments

    add_arguments(demo)
    from rlpt_plugin import eval_cli
    from rlpt_plugin.data import rewrite_cli

    rewrite_cli.add_parser(sub)
    eval_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "rewrite":
        from rlpt_plugin.data import rewrite_cli

        return rewrite_cli.run(args)
    if args.command == "eval":
        from rlpt_plugin import eval_cli

        return eval_cli.run(args)
    from rlpt_plugin.config import ConfigError

    try:
        if args.command == "train":
            from rlpt_plugin.conf_groups import expand_args
            from rlpt_plugin.megatron.host import launch

            overrides = expand_args(args.overrides)
            if args.dry_run:
                print(launch.dry_run(args.recipe, args.out, overrides, suffix_length=args.suffix_length,
                                     step_time_s=args.step_time, gpus=args.gpus))
            else:
                launch.train(args.recipe, args.out, overrides)
        else:
            from rlpt_plugin.demo import run_demo
            from rlpt_plugin.demo.settings import from_args

            run_demo(args.out, from_args(args), progress=not args.no_progress)
    except ConfigError as err:
        print(f"rlpt: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
