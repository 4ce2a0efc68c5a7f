"""What every command's output records about the run, in one place: the environment stamp, the command line as it
was typed, JSON-safe values, and the Triton interpreter switch of CPU runs.

    >>> stamp = environment(["vidsparse", "compare"], torch.device("cpu"))
    >>> stamp["device"], stamp["versions"]["torch"]
    ('CPU Intel(R) Xeon(R) ..., 2 cores', '2.13.0')
    >>> json.dumps(json_safe({"psnr": math.inf}))
    '{"psnr": "inf"}'

`environment` imports diffusers and triton (to name their versions); call it after `use_interpreter_if_needed` on a
CPU, since Triton reads TRITON_INTERPRET when it is first imported.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["device_name", "environment", "invocation", "json_safe", "use_interpreter_if_needed"]


def invocation() -> list[str]:
    """How this process was started: `vidsparse`, or `python -m vidsparse.app.cli`."""
    if Path(sys.argv[0]).name == "cli.py":
        return ["python", "-m", "vidsparse.app.cli"]
    return ["vidsparse"]


def device_name(device: torch.device) -> str:
    """The GPU's name and CUDA version, or the CPU's model and core count (and whether Triton interprets)."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:  # Linux names the model here; platform.processor() is often empty there
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return f"CPU {cpu}, {os.cpu_count()} cores" + (" (Triton interpreter)" if interpreted else "")


def environment(command: list[str], device: torch.device | str) -> dict:
    """The stamp every report carries: date (UTC), device, library versions, and the command that made it.

    The command is relative to the working folder as typed; nothing else in the stamp is a path, so a report made
    in one checkout reads the same in another.
    """
    import diffusers
    import triton

    from .. import __version__

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(torch.device(device)),
        "versions": {"vidsparse": __version__, "torch": torch.__version__, "triton": triton.__version__,
                     "diffusers": diffusers.__version__, "cuda": torch.version.cuda,
                     "python": platform.python_version()},
        "command": shlex.join(command),
    }


def json_safe(value):
    """`value` with numpy types as Python ones, +-inf as "inf"/"-inf", NaN as None, other objects as str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, str):
        return value
    return str(value)


def use_interpreter_if_needed(device: torch.device) -> bool:
    """Run the Triton kernel in Triton's interpreter when there is no GPU; return whether it is interpreted.

    Triton reads TRITON_INTERPRET whenever a function is decorated with `triton.jit`: vidsparse's kernel at its first
    launch, but also triton.language's own helpers when triton is first imported. So this runs before `import triton`.
    A value the user set is kept.
    """
    if torch.device(device).type == "cuda":
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            logger.warning("TRITON_INTERPRET is set: the kernel runs in the interpreter, slowly, on GPU tensors")
        return False
    if "TRITON_INTERPRET" not in os.environ:
        if "triton" in sys.modules:
            logger.warning("triton is already imported: switching on its interpreter now may come too late")
        os.environ["TRITON_INTERPRET"] = "1"
        logger.info("no CUDA device: the Triton kernel runs in Triton's interpreter (switched on for this run)")
    else:
        logger.info("running on the CPU with TRITON_INTERPRET=%s", os.environ["TRITON_INTERPRET"])
    return os.environ["TRITON_INTERPRET"] not in ("", "0")


def host_peak_gib() -> float:
    """Peak resident set size of this process in GiB since the last `reset_host_peak` (Linux's VmHWM), else over the
    whole process."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024 / 2**30
    except (OSError, StopIteration):
        import resource  # POSIX only, and only where /proc is not

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def reset_host_peak() -> bool:
    """Start `host_peak_gib` again from the current RSS (Linux); False where it cannot (it then covers the process)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False
