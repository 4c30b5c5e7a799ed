"""``rlpt rewrite --teacher world`` as a function: the synthetic world's oracle rewriter (suffix
task) or thought annotator (think task), honest by default, run over a :class:`RewriteJob`.

The command line (rlpt_plugin/data/rewrite_cli.py) builds its world teacher with
:func:`world_teacher`; the demos (rlpt_plugin/demo/) call :func:`rewrite_with_world` directly,
so both write the same store and summary for the same job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlpt_plugin.data.rewrite_job import RewriteJob, Summary, run_rewrite, summary_json

SUFFIX_FIELDS = ("knowledge", "rewrite_miss", "rewrite_error")
THINK_FIELDS = ("annotator_miss", "annotator_error")


@dataclass(frozen=True, kw_only=True)
class WorldTeacherSpec:
    """The world (``seed``, ``entities``: None = WorldConfig's default) and the teacher's
    imperfections; None = the honest default of rlpt_plugin/world/teacher.py (suffix task:
    ``knowledge``, ``rewrite_miss``, ``rewrite_error``) or rlpt_plugin/world/annotator.py (think
    task: ``annotator_miss``, ``annotator_error``). A field of the other task is an error (it
    would do nothing). On the command line each is ``--world-<field>``."""

    seed: int = 0
    entities: int | None = None
    knowledge: float | None = None
    rewrite_miss: float | None = None
    rewrite_error: float | None = None
    annotator_miss: float | None = None
    annotator_error: float | None = None


def _flag(name: str) -> str:
    return f"--world-{name.replace('_', '-')}"


def world_teacher(task: str, tokenizer: Any, spec: WorldTeacherSpec,
                  suffix_length: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(the rewriter or annotator, its manifest description) for ``task`` (suffix | think)."""
    from rlpt_plugin.world import WorldConfig, build_kb
    from rlpt_plugin.world import annotator as wa
    from rlpt_plugin.world import teacher as wt

    given_other = [_flag(n) for n in (SUFFIX_FIELDS if task == "think" else THINK_FIELDS)
                   if getattr(spec, n) is not None]
    if given_other:
        raise ValueError(f"{', '.join(given_other)}: not an option of --task {task} with --teacher world")
    world_fields: dict[str, Any] = {"seed": spec.seed}
    if spec.entities is not None:
        world_fields["num_entities"] = spec.entities
    config = WorldConfig(**world_fields)  # WorldConfigError is a ValueError: reported like the others

    def given(value: float | None, default: float) -> float:
        return default if value is None else value

    world = {"seed": config.seed, "num_entities": config.num_entities}
    if task == "think":
        honest = {"miss_rate": given(spec.annotator_miss, wa.DEFAULT_ANNOTATOR_MISS),
                  "error_rate": given(spec.annotator_error, wa.DEFAULT_ANNOTATOR_ERROR)}
        annotator = wa.OracleAnnotator(config, tokenizer, **honest)
        return annotator, {"model_id": annotator.model_id, "template_version": annotator.template_version,
                           "world": world, "world_annotator": honest}
    honest = {"knowledge": given(spec.knowledge, wt.DEFAULT_KNOWLEDGE),
              "miss_rate": given(spec.rewrite_miss, wt.DEFAULT_REWRITE_MISS),
              "error_rate": given(spec.rewrite_error, wt.DEFAULT_REWRITE_ERROR)}
    rewriter = wt.OracleRewriter(build_kb(config), tokenizer, suffix_length, seed=config.seed, **honest)
    return rewriter, {"model_id": rewriter.model_id, "template_version": rewriter.template_version,
                      "world": world, "world_teacher": honest}


def summary_path_for(out_dir: Path) -> Path:
    """Where ``rlpt rewrite`` writes a store's summary by default: ``<out>.summary.json``."""
    return out_dir.with_name(out_dir.name + ".summary.json")


def rewrite_with_world(job: RewriteJob, tokenizer_name: str, spec: WorldTeacherSpec, *,
                       show_progress: bool = True) -> Summary:
    """Run (or resume) ``job`` with the world's teacher and write its summary next to the store,
    as ``rlpt rewrite --teacher world`` does; returns the summary."""
    from rlpt_plugin.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_name)
    suffix_length = job.window_spec.suffix_length if job.window_spec is not None else None
    rewriter, teacher = world_teacher(job.task, tokenizer, spec, suffix_length)
    summary = run_rewrite(job, tokenizer, rewriter, teacher, show_progress=show_progress)
    path = summary_path_for(job.out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary_json(summary) + "\n")
    return summary

