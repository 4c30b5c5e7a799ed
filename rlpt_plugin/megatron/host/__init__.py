"""The host: Megatron-Bridge's pretrain() with the plugin's data and loss (bridge_host.py), the
recipe wrapper, launcher and setup checks, the version shims and the CPU backend.
"""
