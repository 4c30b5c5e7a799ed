"""Rewrite throughput against an OpenAI-protocol server on loopback, at several concurrencies.

The server answers every request after a fixed latency (default 50 ms, a stand-in for a real
teacher's generation time), so the numbers measure the client pipeline: concurrency, batching
into resumable parts, tokenisation, the cache and the store. Prints windows per second per
concurrency and the speed-up over concurrency 1, all measured in this one run.

    .venv/bin/python bench/rewrite_throughput.py [--docs 200] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlpt_plugin.cli import main as rlpt  # noqa: E402
from tests.rewrite.fixtures import make_corpus, make_tokenizer_dir  # noqa: E402
from tests.rewrite.test_rewrite_job import teacher  # noqa: E402
from tests.teacher.loopback_server import Fault, FaultKind, LoopbackServer, always  # noqa: E402


def _serve(latency: float, ports: "mp.Queue[int]") -> None:
    # A separate process: the server's threads must not share the client's interpreter lock.
    with LoopbackServer(responder=teacher, plan=always(Fault(FaultKind.SLOW, delay_s=latency)),
                        max_lifetime_s=3600) as server:
        ports.put(server.port)
        while True:
            time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    tok, corpus = make_tokenizer_dir(root / "tok"), make_corpus(root / "c.jsonl", args.docs, bad_lines=False)
    rates = {}
    ctx = mp.get_context("spawn")
    ports: mp.Queue[int] = ctx.Queue()
    server_proc = ctx.Process(target=_serve, args=(args.latency, ports), daemon=True)
    server_proc.start()
    base_url = f"http://127.0.0.1:{ports.get(timeout=60)}/v1"
    try:
        for c in args.concurrency:
            out = root / f"store{c}"
            began = time.perf_counter()
            code = rlpt(["rewrite", "--corpus", str(corpus), "--tokenizer", str(tok), "--out", str(out),
                         "--endpoint", base_url, "--model", "bench", "--suffix-length", "8",
                         "--seq-length", "32", "--min-prefix", "4", "--windows-per-doc", "2",
                         "--chunk-size", "256", "--concurrency", str(c), "--no-progress"])
            assert code == 0
            windows = 2 * args.docs
            rates[c] = windows / (time.perf_counter() - began)
    finally:
        server_proc.terminate()
    print(f"\nrewrite throughput, {2 * args.docs} windows, server latency {args.latency * 1000:.0f} ms:")
    print(f"{'concurrency':>12}{'windows/s':>12}{'x vs 1':>10}")
    base = rates.get(args.concurrency[0])
    for c, rate in rates.items():
        print(f"{c:>12}{rate:>12.1f}{rate / base:>10.1f}")


if __name__ == "__main__":
    main()
