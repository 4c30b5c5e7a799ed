"""The in-loop candidate stage: rollouts, the async judge's stage and its factory, the
reference and rollout-policy log-prob passes, the frozen reference.
"""
