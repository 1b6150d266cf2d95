"""Runtime: the memory-capped engine pool, exit policies and the runner. Never imports torch."""
