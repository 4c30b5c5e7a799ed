"""Recipes: functions returning a Megatron-Bridge ConfigContainer with the ``rlpt`` section."""
