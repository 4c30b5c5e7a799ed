"""Evaluation: greedy continuations and held-out NLL in the loop, and the ``rlpt eval`` job.
"""
