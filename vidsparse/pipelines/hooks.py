"""The step hook: a diffusers `ModelHook` on the transformer that tells the processors where they are.

Before every transformer forward it records the latent grid after patchify and the denoising step
of the current CFG branch. The branch is the name of the pipeline's `cache_context` ("cond",
"uncond", or CogVideoX's batched "cond_uncond"), None outside a pipeline; the step is the
context's `step_index` when the pipeline gives one, otherwise the count of forwards of that branch
since the last reset. Pipelines reset stateful hooks at the end of every call
(`maybe_free_model_hooks`), so each generation starts at step 0; a step index that goes back (a generation after
one that raised) resets too. Outside a pipeline, call `handle.reset()` between generations; the runtime also
clears a layer's state when a call's layout, batch, dtype or padding differs from what it was made for.

Per-layer state (a planner's plan, cached deltas) lives in a `BranchState` per CFG context, in the hook's
diffusers `StateManager`, as diffusers' cache hooks keep theirs: the hook hands the current branch's state to
the runtime before each forward, and a reset drops every branch's state.

The generation's step count (`PlanContext.num_steps`, to which step schedules are scaled) is the cache context's
`num_inference_steps` where the pipeline gives one (Wan), else that of the pipeline's scheduler where `apply` was
given the pipeline, else unknown.
"""

from __future__ import annotations

from diffusers.hooks.hooks import ModelHook, StateManager

from .adapters import ModelAdapter
from ..runtime.runtime import BranchState, SparseRuntime

__all__ = ["StepHook", "HOOK_NAME"]

HOOK_NAME = "vidsparse_step"


class StepHook(ModelHook):
    _is_stateful = True

    def __init__(self, runtime: SparseRuntime, adapter: ModelAdapter, scheduler=None):
        super().__init__()
        self.runtime = runtime
        self.adapter = adapter
        self.scheduler = scheduler  # the pipeline's, where apply() was given one: its step count after set_timesteps
        # diffusers hands cache contexts to the StateManager attributes of stateful hooks
        self.contexts = StateManager(BranchState, init_kwargs={"store": runtime.store})
        self.calls: dict[str | None, int] = {}
        self.outside = runtime.branch_state()  # the state of forwards outside any cache context

    def pre_forward(self, module, *args, **kwargs):
        self.runtime.take_over()
        context = self.contexts._context
        branch = None if context is None else context.name
        step = self.calls.get(branch, 0)
        if context is not None and context.step_index is not None:
            step = int(context.step_index)
            if step < self.calls.get(branch, 0) - 1:
                # the step index went back: a new generation after one that never reached its end (an exception,
                # Ctrl-C), whose state diffusers did not reset. Nothing of it may be reused.
                self.reset_state(module)
                self.contexts.set_context(context)  # the reset cleared it; this call still runs in it
        self.calls[branch] = step + 1
        hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        self.runtime.grid = self.adapter.latent_grid(module, hidden_states)
        self.runtime.step, self.runtime.branch = step, branch
        self.runtime.num_steps = self.num_steps(context)
        self.runtime.state = self.outside if context is None else self.contexts.get_state()
        return args, kwargs

    def num_steps(self, context) -> int | None:
        """The generation's denoising steps: the cache context's `num_inference_steps` (Wan), else the pipeline
        scheduler's (set by `set_timesteps` before the loop), else None (the schedule runs as stated)."""
        if context is not None and context.num_inference_steps is not None:
            return int(context.num_inference_steps)
        steps = getattr(self.scheduler, "num_inference_steps", None)
        return steps if isinstance(steps, int) and steps > 0 else None

    def reset_state(self, module):
        self.calls.clear()
        self.contexts.reset()
        self.outside.reset()
        self.runtime.new_generation()
        return module
