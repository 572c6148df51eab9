"""GPU jobs: how many GPUs a job asked its scheduler for, and the refusal to run without one.

A rule that runs the U-Net asks for GPUs through its resources: ``gpu`` (Slurm ``--gpus``) or
``gres`` (``--gres=gpu[:<model>]:N``), chosen by config ``cluster.gpu_request``. A job that
asked for a GPU and finds no CUDA device stops here with one error (which node, which PyTorch
build, and the fix) instead of running for hours on the CPU: the usual cause is a CPU-only
PyTorch in the job's environment, or a node without a driver. Running on the CPU is a choice
made in config (``unet.device`` / ``template.device``: ``cpu``), and then no GPU is asked for.

torch is imported only inside :func:`check_gpu_job`, so that building the DAG never loads it.
"""

from __future__ import annotations

import logging
import os
import socket

from dustpred.errors import InputError

log = logging.getLogger(__name__)


def requested_gpus(gpu: int | str | None, gres: str | None = None) -> int:
    """GPUs a job asked for: its ``gpu`` resource, or the count of a ``gres`` ``gpu`` entry.

    ``gres`` is Slurm's form: ``gpu`` (one), ``gpu:2``, ``gpu:a100:2``; other generic
    resources in a comma-separated list are ignored. Returns 0 when neither asks for a GPU.
    """
    count = int(gpu or 0)
    if count:
        return count
    for item in str(gres or "").split(","):
        parts = item.strip().split(":")  # gpu[:<model>][:<count>]
        if parts[0] == "gpu" and len(parts) <= 3:
            return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return 0


def check_gpu_job(setting: str, requested: int, *, key: str) -> None:
    """Raise unless a job that needs CUDA finds it.

    Parameters
    ----------
    setting
        The device setting (``auto``, ``cpu`` or ``cuda``) of config key ``key``.
    requested
        GPUs the job asked its scheduler for (:func:`requested_gpus`).
    key
        The config key, named in the message (``unet.device``, ``template.device``).

    Raises
    ------
    InputError
        When ``setting`` is ``cuda``, or the job asked for a GPU and ``setting`` is not
        ``cpu``, and PyTorch sees no CUDA device.
    """
    import torch

    if setting == "cpu":
        if requested:
            log.warning(
                "config %s is cpu, yet the job was given %d GPU(s), which stay idle; drop the "
                "GPU request (e.g. a --set-resources gpu override) to free them",
                *(key, requested),
            )
        return
    if torch.cuda.is_available() or (setting == "auto" and not requested):
        return
    build = torch.version.cuda
    why = f"the job asked for {requested} GPU(s)" if requested else f"config {key} is {setting!r}"
    raise InputError(
        f"{why}, but PyTorch sees no CUDA device on node {socket.gethostname()} (torch "
        f"{torch.__version__}, "
        + (f"built for CUDA {build}" if build else "a CPU-only build")
        + f"; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). "
        "Expected a CUDA device. Fix: run the GPU rules with a CUDA build of PyTorch "
        "(envs/dustpred-gpu.yaml with --sdm conda, or the container), on a node with a GPU "
        f"driver (nvidia-smi); or, to run on the CPU on purpose, set config {key}: cpu "
        "(then no GPU is asked for)"
    )
