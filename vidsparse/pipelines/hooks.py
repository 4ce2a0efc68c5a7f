"""The step hook: a diffusers `ModelHook` on the transformer that tells the processors where they are.

Before every transformer forward it records the latent grid after patchify and the denoising step
of the current CFG branch. The branch is the name of the pipeline's `cache_context` ("cond",
"uncond", or CogVideoX's batched "cond_uncond"), None outside a pipeline; the step is the
context's `step_index` when the pipeline gives one, otherwise the count of forwards of that branch
since the last reset (outside a context: of its steps, see below). Pipelines reset stateful hooks at the end of every call
(`maybe_free_model_hooks`), so each generation starts at step 0; a step index that goes back (a generation after
one that raised) resets too. Outside a pipeline, call `handle.reset()` between generations; the runtime also
clears a layer's state when a call's layout, batch, dtype or padding differs from what it was made for.

Per-layer state (a planner's plan, cached deltas) lives in a `BranchState` per CFG context, in the hook's
diffusers `StateManager`, as diffusers' cache hooks keep theirs: the hook hands the current branch's state to
the runtime before each forward, and a reset drops every branch's state.

Outside a cache context (a custom loop), a forward at the same timestep and on the same latents as the forward
before it, with other conditioning (text), is another CFG branch of the same step, not a new step: a loop that calls
cond and uncond separately gets one state per call position within a step (branches None, "call2", ...), so that a
cached method never merges one branch's cache into the other's. The check compares those inputs with the previous
call's (a host sync per forward, outside a cache context only). Identical inputs count as the next step, as before.

The generation's step count (`PlanContext.num_steps`, to which step schedules are scaled) is the cache context's
`num_inference_steps` where the pipeline gives one (Wan), else that of the pipeline's scheduler where `apply` was
given the pipeline, else unknown.
"""

from __future__ import annotations

import inspect

import torch
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
        # outside any cache context: each call position within a step has its own state (position 0 first)
        self.outside: dict[int, BranchState] = {}
        self.previous: dict | None = None  # the last forward's inputs outside a context
        self.position = 0
        self._signature = None

    def pre_forward(self, module, *args, **kwargs):
        self.runtime.take_over()
        context = self.contexts._context
        branch = None if context is None else context.name
        if context is None:
            branch = self.outside_branch(module, args, kwargs)
        step = self.calls.get(branch, 0)
        if context is None and self.position:  # another branch of the step position 0 just counted
            step = self.calls.get(None, 1) - 1
        if context is not None and context.step_index is not None:
            step = int(context.step_index)
            if step < self.calls.get(branch, 0) - 1:
                # the step index went back: a new generation after one that never reached its end (an exception,
                # Ctrl-C), whose state diffusers did not reset. Nothing of it may be reused.
                self.reset_state(module)
                self.contexts.set_context(context)  # the reset cleared it; this call still runs in it
        self.calls[branch] = step + 1
        if self.adapter.grid_from_arguments is not None:  # flattened tokens: the grid is in other arguments
            self.runtime.grid = self.adapter.grid_from_arguments(module, self.arguments(module, args, kwargs))
        else:
            hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            self.runtime.grid = self.adapter.latent_grid(module, hidden_states)
        self.runtime.step, self.runtime.branch = step, branch
        self.runtime.num_steps = self.num_steps(context)
        if context is None:
            self.runtime.state = self.outside.setdefault(self.position, self.runtime.branch_state())
        else:
            self.runtime.state = self.contexts.get_state()
        return args, kwargs

    def outside_branch(self, module, args, kwargs) -> str | None:
        """The CFG branch of a forward outside any cache context (see the module docstring): None for the first
        call of a step, "callN" for the N-th call in a row at the same timestep and latents with other
        conditioning."""
        inputs = {k: v for k, v in self.arguments(module, args, kwargs).items() if isinstance(v, torch.Tensor)}
        previous, self.previous = self.previous, inputs
        same_step = (previous is not None and "timestep" in inputs and "hidden_states" in inputs
                     and all(_same(inputs.get(k), previous.get(k)) for k in ("timestep", "hidden_states")))
        if same_step and not all(_same(inputs.get(k), previous.get(k)) for k in set(inputs) | set(previous)):
            self.position += 1
        else:
            self.position = 0
        return None if self.position == 0 else f"call{self.position + 1}"

    def arguments(self, module, args, kwargs) -> dict:
        """This forward's arguments by parameter name (the keyword arguments alone where they do not bind)."""
        if self._signature is None:
            self._signature = inspect.signature(type(module).forward)
        try:
            return self._signature.bind_partial(module, *args, **kwargs).arguments
        except TypeError:
            return dict(kwargs)

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
        for state in self.outside.values():
            state.reset()
        self.outside.clear()
        self.previous, self.position = None, 0
        self.runtime.new_generation()
        return module


def _same(a, b) -> bool:
    """Whether two call inputs are the same tensor or equal ones (None: both absent)."""
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b))
