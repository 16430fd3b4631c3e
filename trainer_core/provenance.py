"""Where a result came from: versions, hardware, threads, git commit."""

from __future__ import annotations

import datetime as _dt
import functools
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from trainer_core.precision import cpu_flags, cpu_model_name


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the trainbench checkout (with '-dirty' if it has uncommitted changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def utc_timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def machine_identity() -> dict[str, Any]:
    """Which machine a result came from: host, CPU model, GPUs and the NVIDIA driver (cells of one run may
    run on different machines of a cluster; comparing them is only fair on the same hardware)."""
    driver = None
    nvidia = Path("/proc/driver/nvidia/version")
    if nvidia.is_file():
        match = re.search(r"Kernel Module\s+([\d.]+)", nvidia.read_text())
        driver = match.group(1) if match else None
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {"hostname": socket.gethostname(), "cpu": cpu_model_name(), "gpus": gpus, "driver": driver}


def environment_info() -> dict[str, Any]:
    """Everything a reader needs to judge whether two results are comparable."""
    info: dict[str, Any] = {
        "timestamp": utc_timestamp(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "cpu": cpu_model_name(),
        "cpu_flags_of_note": sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx2", "fma"))),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info
