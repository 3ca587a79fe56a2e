"""First-party plugins. Each module is one plugin with its own entry point in group `ponder`."""
