"""``rlpt``: the plugin's command line.

    rlpt train --recipe rlpt_plugin.recipes.tiny:tiny_config --out runs/x rlpt.loss.beta=0.05
    rlpt demo  [--out DIR] [key=value ...]
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
    train.add_argument("overrides", nargs="*", help="Hydra-syntax overrides: key=value")
    demo = sub.add_parser("demo", help="the smallest real run: a tiny GPT trained with LM + DPO "
                                       "+ RF-NLL through pretrain(), then a before/after table")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("overrides", nargs="*", help="Hydra-syntax overrides: key=value")
    from rlpt_plugin.data import rewrite_cli

    rewrite_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "rewrite":
        from rlpt_plugin.data import rewrite_cli

        return rewrite_cli.run(args)
    from rlpt_plugin.config import ConfigError

    try:
        if args.command == "train":
            from rlpt_plugin.megatron.launch import train

            train(args.recipe, args.out, args.overrides)
        else:
            from rlpt_plugin.demo import run_demo

            run_demo(args.out, args.overrides)
    except ConfigError as err:
        print(f"rlpt: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
