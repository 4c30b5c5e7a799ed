"""The only sub-package that imports ``megatron.*``.

Importing it on a machine without CUDA installs the narrow import guard that lets
Megatron-Bridge's modules load without Transformer Engine (see bridge_cpu.py); with CUDA it
does nothing.
"""

from rlpt_plugin.megatron.host.bridge_cpu import install_import_guard

install_import_guard()
