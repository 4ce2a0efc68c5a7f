"""The contract, torch only: what the search, the planners, the runtime and the kernels hand each other.

- `layout`: `TokenLayout` (text and the latent grid) and `TokenOrder` (frame-major, spatial-major, voxel), each
  permutation with its inverse;
- `mask`: `SparseMask`, the one object the kernels take;
- `patterns`: sparsity patterns in grid units, compiled to a `SparseMask` for a layout;
- `pattern_file`: the searched per-head patterns on disk (safetensors plus JSON metadata);
- `plan`: `AttentionPlan`, `HeadGroup`, `PlanContext` and `Probe`, the seam every method plugs into;
- `select`: choosing per head under an error budget (`select`) or a density target (`select_within`).
"""
