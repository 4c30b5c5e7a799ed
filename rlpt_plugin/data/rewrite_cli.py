"""Command-line front of ``rlpt rewrite`` (argument parsing and teacher construction).

The API key is read from an environment variable (``--api-key-env NAME``), never from the
command line (which ``ps`` shows to every user and shells keep in history), and never printed:
errors name the variable, not its value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rlpt_plugin.teacher.credentials import key_from_env


def add_parser(sub: Any) -> None:
    p = sub.add_parser("rewrite", help="rewrite the suffix of every window of a corpus with a "
                                       "teacher into a rewritten store (sharded, resumable); "
                                       "--task think: insert thoughts into corpus chunks instead")
    p.add_argument("--task", choices=("suffix", "think"), default="suffix",
                   help="suffix (default): rewrite each window's N-token suffix into a rewritten store; "
                        "think: the teacher inserts <think>...</think> thoughts into each chunk of "
                        "--chunk-length tokens, kept only when removing them gives back the chunk exactly, "
                        "into an augmented (think) store")
    p.add_argument("--corpus", nargs="+", required=True,
                   help="JSON-lines / parquet files or directories, or Megatron .bin/.idx prefixes")
    p.add_argument("--field", default="text", help="text field of JSON lines / parquet column")
    p.add_argument("--tokenizer", required=True,
                   help="local Hugging Face tokenizer directory, or a registered name (world)")
    p.add_argument("--out", required=True, help="store directory to create")
    p.add_argument("--suffix-length", type=int, default=None,
                   help="suffix task: N, tokens per suffix (default and paper: 128)")
    p.add_argument("--seq-length", type=int, default=2048, help="model sequence length (paper: 2048)")
    p.add_argument("--min-prefix", type=int, default=None, help="suffix task: minimum prefix tokens of a "
                                                                 "window (default 16)")
    p.add_argument("--windows-per-doc", type=int, default=None, help="suffix task: windows per document "
                                                                      "(default 1)")
    p.add_argument("--seed", type=int, default=None, help="suffix task: seed of the split points (default 0)")
    p.add_argument("--chunk-length", type=int, default=None,
                   help="think task: tokens per corpus chunk (default 512; a document's last piece is a "
                        "chunk when it has at least --min-chunk tokens)")
    p.add_argument("--min-chunk", type=int, default=None, help="think task: shortest last chunk, in tokens "
                                                                "(default 32)")
    p.add_argument("--shard", default="0/1", help="i/n: this job's share of the corpus")
    p.add_argument("--chunk-size", type=int, default=256, help="windows (think: chunks) per resumable part file")
    p.add_argument("--teacher", choices=("openai", "hf", "world"), default="openai",
                   help="openai: endpoints; hf: a local model; world: the synthetic world's exact "
                        "oracle (no endpoints; use the --world-* settings that generated the corpus)")
    p.add_argument("--world-seed", type=int, default=0, help="--teacher world: WorldConfig.seed")
    p.add_argument("--world-entities", type=int, default=None,
                   help="--teacher world: WorldConfig.num_entities (default: WorldConfig's)")
    p.add_argument("--world-knowledge", type=float, default=None,
                   help="--teacher world: share of the facts the teacher knows (default 0.8; 1 = exact "
                        "oracle; rlpt_plugin/world/knowledge.py)")
    p.add_argument("--world-annotator-miss", type=float, default=None,
                   help="--teacher world --task think: share of two-hop places left without a thought "
                        "(default 0.1; rlpt_plugin/world/annotator.py)")
    p.add_argument("--world-annotator-error", type=float, default=None,
                   help="--teacher world --task think: share of thoughts naming a wrong employer (default 0.05)")
    p.add_argument("--world-rewrite-miss", type=float, default=None,
                   help="--teacher world: probability that a defective sentence is left as is (default 0.1)")
    p.add_argument("--world-rewrite-error", type=float, default=None,
                   help="--teacher world: probability that a written value is replaced by a wrong one "
                        "(default 0.02)")
    p.add_argument("--endpoint", action="append", default=[],
                   help="OpenAI-protocol base URL, e.g. http://host:8000/v1 (repeat for a pool)")
    p.add_argument("--model", help="model name served by the endpoints (openai) or local path (hf)")
    p.add_argument("--endpoint-kind", choices=("chat", "completions"), default="chat",
                   help="chat: /v1/chat/completions; completions: /v1/completions with the chat "
                        "template flattened into one prompt that ends with the priming words")
    p.add_argument("--api-key-env", metavar="NAME",
                   help="environment variable holding the endpoints' API key, sent as "
                        "'Authorization: Bearer <key>' (never printed or saved)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--attempts", type=int, default=4, help="attempts per request")
    p.add_argument("--template", default=None, help="prompt template (default: rewrite_v1; think: think_v1)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=None,
                   help="new tokens per teacher answer; default N + max(8, ceil(N/8)) for N = "
                        "--suffix-length (144 for N = 128). N is the paper's choice; the margin "
                        "covers a teacher tokenizer finer than the student's and echoed priming "
                        "words. The rewrite is cut to N student tokens either way; pass "
                        "--max-tokens N for the paper's exact setting. think task: default 4 x "
                        "--chunk-length (the copied chunk and its thoughts)")
    p.add_argument("--cache", help="teacher response cache (sqlite); default: <out>.cache.sqlite")
    p.add_argument("--summary-json", help="where to write the run summary as JSON; default: "
                                          "<out>.summary.json")
    p.add_argument("--no-progress", action="store_true")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"`--shard` must look like i/n (e.g. 3/8), but is {text!r}") from None
    return i, n


def _api_key(args: argparse.Namespace) -> str | None:
    """The key from ``$<--api-key-env>``; a ValueError naming the variable when unset or empty."""
    name = args.api_key_env
    if name is None:
        return None
    if args.teacher != "openai":
        raise ValueError(f"`--api-key-env` is for --teacher openai, but --teacher is {args.teacher!r}")
    if not name:
        raise ValueError(f"`--api-key-env` must name an environment variable, but is {name!r}")
    return key_from_env(name, "--api-key-env")


def _client(args: argparse.Namespace, api_key: str | None) -> Any:
    if args.teacher == "hf":
        if not args.model:
            raise ValueError("`--model` must name a local model directory with --teacher hf")
        from rlpt_plugin.teacher.hf_backend import HFBackend

        return HFBackend(args.model)
    if not args.endpoint or not args.model:
        raise ValueError("--teacher openai needs at least one `--endpoint` and a `--model`")
    from rlpt_plugin.teacher.openai_client import OpenAIClient

    return OpenAIClient(args.endpoint, args.model, api_key=api_key, endpoint_kind=args.endpoint_kind,
                        max_concurrency=args.concurrency, timeout_s=args.timeout,
                        max_attempts=args.attempts)


def _world_rewriter(args: argparse.Namespace, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    """The oracle rewriter (or, ``--task think``, annotator) of the world that ``--world-seed`` /
    ``--world-entities`` describe (rlpt_plugin/data/world_rewrite.py)."""
    from rlpt_plugin.data.world_rewrite import WorldTeacherSpec, world_teacher

    spec = WorldTeacherSpec(seed=args.world_seed, entities=args.world_entities, knowledge=args.world_knowledge,
                            rewrite_miss=args.world_rewrite_miss, rewrite_error=args.world_rewrite_error,
                            annotator_miss=args.world_annotator_miss, annotator_error=args.world_annotator_error)
    return world_teacher(args.task, tokenizer, spec, args.suffix_length)


_SUFFIX_ONLY = ("suffix_length", "min_prefix", "windows_per_doc", "seed")
_THINK_ONLY = ("chunk_length", "min_chunk")
_SUFFIX_DEFAULTS = {"suffix_length": 128, "min_prefix": 16, "windows_per_doc": 1, "seed": 0}


def _task_options(args: argparse.Namespace) -> None:
    """Refuse options of the other task (they would silently do nothing); fill the defaults."""
    other = _THINK_ONLY if args.task == "suffix" else _SUFFIX_ONLY
    given = [f"--{name.replace('_', '-')}" for name in other if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} not an option of "
                         f"--task {args.task}: drop {'it' if len(given) == 1 else 'them'}")
    if args.task == "suffix":
        for name, value in _SUFFIX_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        args.template = args.template or "rewrite_v1"
    else:
        args.template = args.template or "think_v1"


def run(args: argparse.Namespace) -> int:
    from rlpt_plugin.data.rewrite_job import RewriteJob, run_rewrite, summary_json
    from rlpt_plugin.data.tokenizer import load_tokenizer
    from rlpt_plugin.data.windows import WindowSpec
    from rlpt_plugin.data.world_rewrite import summary_path_for
    from rlpt_plugin.teacher.cache import CachedClient, ResponseCache
    from rlpt_plugin.teacher.protocol import SamplingParams
    from rlpt_plugin.teacher.rewriter import Rewriter, default_max_tokens
    from rlpt_plugin.teacher.think_rewriter import ThinkRewriter, default_think_max_tokens
    from rlpt_plugin.teacher.templates import load_template

    cache = None
    try:
        api_key = _api_key(args)  # first: a missing key is reported before any work
        _task_options(args)
        shard, num_shards = _shard(args.shard)
        out = Path(args.out)
        if args.task == "think":
            from rlpt_plugin.data.think_job import DEFAULT_CHUNK_LENGTH, DEFAULT_MIN_CHUNK, ThinkSpec

            spec = ThinkSpec(chunk_length=DEFAULT_CHUNK_LENGTH if args.chunk_length is None else args.chunk_length,
                             min_chunk_tokens=DEFAULT_MIN_CHUNK if args.min_chunk is None else args.min_chunk)
            if spec.chunk_length > args.seq_length:
                raise ValueError(f"`--chunk-length` ({spec.chunk_length}) must be <= `--seq-length` "
                                 f"({args.seq_length}): a chunk must fit one training sequence")
            specs: dict[str, Any] = {"think_spec": spec}
        else:
            specs = {"window_spec": WindowSpec(suffix_length=args.suffix_length, seq_length=args.seq_length,
                                               min_prefix_tokens=args.min_prefix,
                                               windows_per_doc=args.windows_per_doc, seed=args.seed)}
        job = RewriteJob(corpus=tuple(args.corpus), out_dir=out, field=args.field, shard=shard,
                         num_shards=num_shards, chunk_size=args.chunk_size, **specs)
        tokenizer = load_tokenizer(args.tokenizer)
        if args.teacher == "world":
            rewriter, teacher = _world_rewriter(args, tokenizer)
        else:
            template = load_template(args.template)
            if args.max_tokens is not None:
                max_tokens = args.max_tokens
            elif args.task == "think":
                max_tokens = default_think_max_tokens(job.think_spec.chunk_length)
            else:
                max_tokens = default_max_tokens(args.suffix_length)
            params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=max_tokens)
            inner = _client(args, api_key)
            cache = ResponseCache(args.cache or str(out.with_name(out.name + ".cache.sqlite")))
            client = CachedClient(inner, cache, template.version)
            kind = args.endpoint_kind if args.teacher == "openai" else None
            if args.task == "think":
                rewriter = ThinkRewriter(client, tokenizer, template, params, kind=kind)
            else:
                rewriter = Rewriter(client, tokenizer, template, args.suffix_length, params, kind=kind)
            teacher = {"model_id": inner.model_id, "template_version": template.version,
                       "sampling": params.as_dict()}
            if args.teacher == "openai":  # where the answers came from; URLs redacted, no key
                teacher.update({k: inner.describe()[k] for k in ("endpoints", "endpoint_kind")})
        summary = run_rewrite(job, tokenizer, rewriter, teacher, show_progress=not args.no_progress)
        summary_path = Path(args.summary_json) if args.summary_json else summary_path_for(out)
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(summary_json(summary) + "\n")
    except ValueError as err:  # user mistakes: a clear message, no traceback
        print(f"rlpt rewrite: error: {err}", file=sys.stderr)
        return 2
    finally:
        if cache is not None:
            cache.close()
    print("\n".join(summary.lines()))
    print(f"store: {out}")
    print(f"summary: {summary_path}")
    return 0
