"""Self-improving pretraining (arXiv 2601.21343) for Megatron-Core / Megatron-Bridge."""

__version__ = "0.1.0"
