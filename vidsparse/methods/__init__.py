"""Planners decide, they never execute: each method turns a `PlanContext` and a lazy `Probe` into an `AttentionPlan`.

- `registry`: `register_method(name, Options)`; the methods import it and it imports none of them;
- `config`: `SparseConfig`, the validated config of one installation, and its named `PRESETS`;
- `base`: the `Planner` base, "dense", and the fixed grid patterns "spatial" and "temporal";
- `static`: a searched pattern file, per layer and head (Sparse-vDiT);
- `profile`: spatial or temporal per head from sampled rows at run time (Sparse VideoGen);
- `delta`: cached step deltas over top-k key columns in voxel order (Chipmunk);
- `hybrid`: per head the cheapest of them all within one budget;
- `sampling`: the sampled-row scoring the online methods share.
"""
