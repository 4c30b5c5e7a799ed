"""The stores and datasets: rewritten and think stores as Megatron indexed datasets, the
suffix and think datasets, the job's own data.
"""
