"""In-process teacher: a Hugging Face ``transformers`` causal LM loaded from a local directory.

Meant for small teachers, debugging and tests (no server to run). torch and transformers are
imported lazily, in the constructor, so importing this module costs nothing.

Decoding is a plain KV-cached loop written here rather than ``model.generate`` because we need
per-request ``torch.Generator`` seeding inside a batch (each row draws from its own generator, so
a request's sample does not depend on what it was batched with), top-p, stop strings and an
explicit finish reason. Requests are batched (left padding, at most ``max_batch``) only with
others of identical sampling params.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlpt_plugin.teacher.protocol import GenerationRequest, GenerationResult, GenerationStatus, SamplingParams


def _seed_for(request: GenerationRequest) -> int:
    """``params.seed``, or one derived from the request id so unseeded runs still reproduce."""
    if request.params.seed is not None:
        return request.params.seed
    return int.from_bytes(hashlib.sha256(request.request_id.encode()).digest()[:8], "little") >> 1


class HFBackend:
    """``TeacherClient`` backed by ``AutoModelForCausalLM`` + ``AutoTokenizer`` (local files only)."""

    def __init__(self, model_path: str, *, device: str = "cpu", dtype: str | None = None, max_batch: int = 8) -> None:
        path = Path(model_path).resolve()
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"model_path must be a local model directory with config.json, got {model_path!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = None
        if dtype is not None:
            torch_dtype = getattr(torch, str(dtype), None)
            if not isinstance(torch_dtype, torch.dtype):
                raise ValueError(f"dtype must name a torch dtype such as 'float32' or 'bfloat16', got {dtype!r}")
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        if torch_dtype is not None:
            model = model.to(torch_dtype)  # after loading: avoids version-specific dtype kwargs
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.max_batch = max_batch
        # The config hash makes two different checkpoints that share a directory name distinct
        # in cache keys; the weights themselves are not hashed (too slow for large teachers).
        digest = hashlib.sha256(config_file.read_bytes()).hexdigest()[:12]
        self.model_id = f"{path.name}@{digest}"
        cfg = self.model.config
        self.context_length: int | None = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        eos: set[int] = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                eos.add(source)
            elif isinstance(source, (list, tuple)):
                eos.update(int(t) for t in source)
        self._eos = eos
        pad = self.tokenizer.pad_token_id
        self._pad = pad if pad is not None else (min(eos) if eos else 0)
        self._lock = threading.Lock()  # one forward at a time, whatever the callers do

    # -- TeacherClient ----------------------------------------------------------------------

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate in a worker thread (keeps the event loop responsive); request order kept."""
        if self.model is None:
            raise RuntimeError("HFBackend.generate called after aclose()")
        for i, req in enumerate(requests):
            if req.params.structured is not None:
                raise ValueError(f"requests[{i}] ({req.request_id!r}) asks for structured output "
                                 f"{req.params.structured.kind!r}, which the in-process backend cannot "
                                 "constrain; send it to an inference server or leave it out")
        return await asyncio.to_thread(self._generate_sync, list(requests))

    async def aclose(self) -> None:
        """Drop the model (frees its memory once nothing else references it)."""
        self.model = None  # type: ignore[assignment]

    # -- internals --------------------------------------------------------------------------

    def _prompt_ids(self, req: GenerationRequest) -> list[int]:
        tok = self.tokenizer
        if req.messages is None:
            return list(tok(req.prompt + req.assistant_prefix, add_special_tokens=True)["input_ids"])
        if getattr(tok, "chat_template", None):
            msgs = [{"role": r, "content": c} for r, c in req.messages]
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + req.assistant_prefix
            return list(tok(text, add_special_tokens=False)["input_ids"])  # the template has them
        text = "".join(f"{r}: {c}\n" for r, c in req.messages) + "assistant: " + req.assistant_prefix
        return list(tok(text, add_special_tokens=True)["input_ids"])

    def _generate_sync(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[SamplingParams, list[tuple[int, list[int]]]] = {}
        for i, req in enumerate(requests):
            t0 = time.perf_counter()
            try:
                ids = self._prompt_ids(req)
            except Exception as exc:  # a bad request fails alone, never the batch
                results[i] = GenerationResult.failure(req.request_id, f"tokenization failed: {exc}", 1, time.perf_counter() - t0)
                continue
            if self.context_length is not None and len(ids) >= self.context_length:
                error = f"prompt of {len(ids)} tokens does not fit the model context of {self.context_length}"
                results[i] = GenerationResult.failure(req.request_id, error, 1, 0.0)
                continue
            groups.setdefault(req.params, []).append((i, ids))
        for params, members in groups.items():
            for start in range(0, len(members), self.max_batch):
                chunk = members[start : start + self.max_batch]
                t0 = time.perf_counter()
                try:
                    with self._lock:
                        outs = self._decode([ids for _, ids in chunk], params, [requests[i] for i, _ in chunk])
                except Exception as exc:  # e.g. out of memory: report, do not raise
                    latency = time.perf_counter() - t0
                    for i, _ in chunk:
                        error = f"generation failed: {type(exc).__name__}: {exc}"
                        results[i] = GenerationResult.failure(requests[i].request_id, error, 1, latency)
                    continue
                latency = time.perf_counter() - t0
                for (i, _), (text, finish) in zip(chunk, outs):
                    results[i] = GenerationResult(requests[i].request_id, GenerationStatus.OK, text, finish,
                                                  None, attempts=1, latency_s=latency)  # fmt: skip
        return [r for r in results if r is not None]

    def _choose(self, logits: Any, params: SamplingParams, generators: list[Any]) -> Any:
        """Next token per row: argmax when greedy, else temperature + top-p sampling."""
        torch = self._torch
        if params.temperature == 0.0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            # Drop a token when the mass *before* it already reaches top_p (keeps at least one).
            drop = (sorted_p.cumsum(dim=-1) - sorted_p) >= params.top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
            probs = probs / probs.sum(dim=-1, keepdim=True)
        rows = [torch.multinomial(probs[r], 1, generator=generators[r]) for r in range(probs.shape[0])]
        return torch.cat(rows)

    def _decode(self, prompts: list[list[int]], params: SamplingParams,
                requests: list[GenerationRequest]) -> list[tuple[str, str]]:  # fmt: skip
        torch = self._torch
        batch, width = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((batch, width), self._pad, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for r, ids in enumerate(prompts):  # left padding: every row's last prompt token aligns
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[r, width - len(ids):] = 1
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        limits = [params.max_tokens if self.context_length is None else min(params.max_tokens, self.context_length - len(p))
                  for p in prompts]  # fmt: skip
        generators = []
        if params.temperature > 0.0:
            generators = [torch.Generator(device=self.device).manual_seed(_seed_for(req)) for req in requests]
        new: list[list[int]] = [[] for _ in range(batch)]
        texts: list[str | None] = [None] * batch  # set when a stop string ends the row
        finish = ["length"] * batch
        done = [False] * batch
        cur_ids, cur_pos, past = input_ids.to(self.device), positions.to(self.device), None
        mask = mask.to(self.device)
        with torch.inference_mode():
            for _step in range(max(limits)):
                out = self.model(input_ids=cur_ids, attention_mask=mask, position_ids=cur_pos,
                                 past_key_values=past, use_cache=True)  # fmt: skip
                past = out.past_key_values
                chosen = self._choose(out.logits[:, -1, :].float(), params, generators).tolist()
                for r, tok in enumerate(chosen):
                    if done[r]:
                        continue
                    if tok in self._eos:
                        done[r], finish[r] = True, "stop"
                        continue
                    new[r].append(tok)
                    if params.stop:
                        text = self.tokenizer.decode(new[r], skip_special_tokens=True)
                        cuts = [text.find(s) for s in params.stop if s in text]
                        if cuts:
                            texts[r], done[r], finish[r] = text[: min(cuts)], True, "stop"
                            continue
                    if len(new[r]) >= limits[r]:
                        done[r] = True
                if all(done):
                    break
                feed = [self._pad if done[r] else chosen[r] for r in range(batch)]  # done rows: ignored
                cur_ids = torch.tensor(feed, dtype=torch.long, device=self.device)[:, None]
                cur_pos = cur_pos[:, -1:] + 1
                mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=self.device)], dim=-1)
        return [(texts[r] if texts[r] is not None else self.tokenizer.decode(new[r], skip_special_tokens=True), finish[r])
                for r in range(batch)]  # fmt: skip
