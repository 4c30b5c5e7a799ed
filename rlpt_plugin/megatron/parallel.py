"""The plugin's single window onto Megatron's parallel state and process groups.

Everything else in the plugin asks this module "how many data-parallel ranks", "am I the last
pipeline stage", "sum these counts over the data-parallel group". Keeping it in one place keeps
the rest testable without processes and makes a change of megatron-core's API a one-file fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.num_microbatches_calculator import get_num_microbatches as _get_num_microbatches


@dataclass(frozen=True)
class Layout:
    """Sizes and this process's coordinates in the tensor/pipeline/data-parallel grid."""

    tp_size: int
    pp_size: int
    dp_size: int
    tp_rank: int
    pp_rank: int
    dp_rank: int

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1


def layout() -> Layout:
    """Read the current layout from megatron's parallel state (must be initialized)."""
    return Layout(
        tp_size=ps.get_tensor_model_parallel_world_size(),
        pp_size=ps.get_pipeline_model_parallel_world_size(),
        dp_size=ps.get_data_parallel_world_size(),
        tp_rank=ps.get_tensor_model_parallel_rank(),
        pp_rank=ps.get_pipeline_model_parallel_rank(),
        dp_rank=ps.get_data_parallel_rank(),
    )


def dp_share(step: int, groups_per_step: int) -> range:
    """This data-parallel rank's contiguous share of step ``step``'s global group ids. The global
    ids of a step do not depend on the layout, so DP1 and DP2 train on the same global batch."""
    lay = layout()
    if groups_per_step % lay.dp_size:
        raise ValueError(f"groups_per_step ({groups_per_step}) must be divisible by the "
                         f"data-parallel size ({lay.dp_size})")
    per_rank = groups_per_step // lay.dp_size
    first = step * groups_per_step + lay.dp_rank * per_rank
    return range(first, first + per_rank)


def num_microbatches() -> int:
    """Micro-batches per step, as the schedule will run them."""
    return _get_num_microbatches()


def all_reduce_sum_over_dp(values: torch.Tensor) -> torch.Tensor:
    """Sum a small float64 tensor over the data-parallel group (returns a new tensor).

    Used for the GLOBAL loss denominators: every term is normalised by its count over all
    micro-batches and all data-parallel replicas, so the loss does not depend on the layout.
    """
    out = values.detach().to(torch.float64).clone()
    if dist.is_initialized() and ps.get_data_parallel_world_size() > 1:
        dist.all_reduce(out, group=ps.get_data_parallel_group())
    return out


def loss_scale_for_schedule() -> float:
    """Factor that undoes the schedule's and DDP's averaging.

    With a 3-tuple loss return and ``calculate_per_token_loss=False`` the schedule divides each
    micro-batch's loss by ``num_tokens`` (we pass 1) and by the number of micro-batches, and DDP
    averages gradients over the data-parallel (x context-parallel) group. Our loss is already a
    globally normalised CONTRIBUTION, so we multiply by both to get gradients of the true sum.
    """
    return float(num_microbatches() * ps.get_data_parallel_world_size(with_context_parallel=True))


def pp_recv_from_prev(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Receive activations from the previous pipeline stage (same TP rank)."""
    buffer = torch.empty(shape, dtype=dtype, device=device)
    dist.recv(buffer, src=ps.get_pipeline_model_parallel_prev_rank(),
              group=ps.get_pipeline_model_parallel_group())
    return buffer


def pp_send_to_next(tensor: torch.Tensor) -> None:
    """Send activations to the next pipeline stage (same TP rank)."""
    dist.send(tensor.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank(),
              group=ps.get_pipeline_model_parallel_group())


def pp_broadcast_from_last(tensor: torch.Tensor) -> torch.Tensor:
    """Every stage gets the last stage's ``tensor`` (others pass a buffer of the same shape)."""
    if ps.get_pipeline_model_parallel_world_size() > 1:
        dist.broadcast(tensor, src=ps.get_pipeline_model_parallel_last_rank(),
                       group=ps.get_pipeline_model_parallel_group())
    return tensor


def is_model_parallel_first() -> bool:
    """The first rank of this data-parallel replica's model-parallel (TP x PP) group."""
    return ps.get_model_parallel_group().rank() == 0 if dist.is_initialized() else True


def mp_broadcast_from_first(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank of the model-parallel group gets its first rank's ``tensor`` (in place)."""
    group = ps.get_model_parallel_group()
    if dist.is_initialized() and group.size() > 1:
        dist.broadcast(tensor, src=dist.get_global_rank(group, 0), group=group)
    return tensor


def mp_broadcast_object_from_first(obj: object) -> object:
    """Every rank of the model-parallel group gets its first rank's ``obj`` (a picklable value;
    for rare messages such as a failure's reason, not for per-step data)."""
    group = ps.get_model_parallel_group() if dist.is_initialized() else None
    if group is None or group.size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0), group=group)
    return box[0]
