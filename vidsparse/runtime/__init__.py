"""Runs any `AttentionPlan` and knows no model: the executor, the sparse backends, statistics and per-layer state."""
