"""One line naming the machine a benchmark ran on, printed beside every figure it reports."""
import os
import platform

import torch


def machine_line(device: torch.device | None = None, extra: str = "") -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f" | GPU {torch.cuda.get_device_name(device)}" if device is not None and device.type == "cuda" else ""
    return (f"machine: {cpu} | cores {os.cpu_count()} | torch threads {torch.get_num_threads()}{gpu} | "
            f"torch {torch.__version__}{' ' + extra if extra else ''} | python {platform.python_version()}")
