"""The synthetic world's recipe: a small GPT trained on a rewritten store of the world corpus.

Defaults are those of ``make demo`` (rlpt_plugin/demo/): the store comes from ``rlpt rewrite
--teacher world``, the judge is the world's honest teacher (``rlpt.judge.backend=world``: judge
noise 0.1, knows 80% of the facts; ``rlpt.judge.noise_rate=0 rlpt.judge.world_knowledge=1`` is
the exact oracle), the pool is K rollouts + the original suffix + the teacher's rewrite (on a
systematic myth neither the corpus nor the model's samples hold the truth; measured in the
README), the loss is next-token NLL + online DPO. Setting
``rlpt.loss.dpo.start=0`` turns the same recipe into plain next-token training on the same
windows (the baseline). Every field takes a Hydra override like any recipe.
"""

from __future__ import annotations

from pathlib import Path

from rlpt_plugin.megatron.host.bridge_host import RLPTConfigContainer
from rlpt_plugin.recipes.tiny import cpu_gpt_config
from rlpt_plugin.world.vocab import WorldTokenizer


def world_config(out_dir: str | Path, *, store: str | Path | None = None, train_iters: int = 200,
                 num_layers: int = 4, hidden_size: int = 128, seq_length: int = 64,
                 groups_per_step: int = 16, lr: float = 1e-3,
                 num_rollouts: int = 4, world_seed: int = 0, world_entities: int = 200,
                 seed: int = 1234) -> RLPTConfigContainer:
    """SIP on the world: ``groups_per_step`` prefixes per step, each with ``num_rollouts``
    rollouts + the original suffix + the rewrite, judged by the world's teacher on all three axes. One micro-batch holds
    a step's rows (an LM row plus a chosen and a rejected one per prefix: DPO pairs never split)."""
    out_dir = Path(out_dir)
    vocab = WorldTokenizer().vocab_size
    cfg = cpu_gpt_config(out_dir, num_layers=num_layers, hidden_size=hidden_size, num_attention_heads=4,
                         vocab_size=vocab, tokenizer_vocab_size=vocab, train_iters=train_iters,
                         micro_batch_size=3 * groups_per_step, global_batch_size=3 * groups_per_step,
                         seq_length=seq_length, lr=lr, seed=seed)
    r = cfg.rlpt
    r.data.source, r.data.tokenizer, r.data.groups_per_step, r.data.seed = "store", "world", groups_per_step, seed
    r.data.stores = [str(store if store is not None else out_dir / "store")]
    r.candidates.num_rollouts, r.candidates.original, r.candidates.rewrite = num_rollouts, True, True
    r.judge.backend, r.judge.world_seed, r.judge.world_entities = "world", world_seed, world_entities
    r.judge.quality = r.judge.safety = r.judge.factuality = 1.0
    r.loss.beta = 0.1
    return cfg
