"""U-Net training, the rule's entry point: resumable, fast on a GPU, and data-parallel.

:func:`train_unet` trains one U-Net on the training shards and writes the model file and the
per-epoch table. The epochs themselves (recipe, seeding, CUDA graphs) are run by
:class:`dustpred.training.loop.Trainer`; this module sets a run up and writes its files.

Set-up (every number from the ``unet`` config section, typed as
:class:`~dustpred.models.settings.UNetSettings`): a fraction ``validation_fraction`` of the
training cutouts is held out (seeded) for validation; the input normalisation is fitted on up
to :data:`STATS_CUTOUTS` training cutouts; the model initialisation comes from ``seed``.
On CUDA the prepared training set is held in GPU memory (in bf16) when it fits.

Resume: after every epoch, rank 0 writes a resume state (model, optimizer, epoch, history,
best weights) atomically to ``resume_path``. A new run with the same fingerprint (config
slice, seed, training shards' names, sizes and mtimes) continues from it; any other
fingerprint starts afresh. The state is deleted once the final model file is written.

Several GPUs: :func:`train_unet` re-launches itself through ``torch.distributed.run`` with one
process per GPU (:func:`launch_distributed`); every rank holds the data, each global batch
is split across ranks without overlap, and only rank 0 writes files. The same code runs on
CPU with the gloo backend (tested there against one process).

The other jobs live in their own modules: the training loop in :mod:`dustpred.training.loop`, the
process group and synchronised BatchNorm in :mod:`dustpred.training.distributed`, the in-memory
training set, its augmentations and the epoch order in :mod:`dustpred.training.resident`, the model
file in :mod:`dustpred.models.checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import h5py
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

import dustpred
from dustpred.atomic import atomic_write
from dustpred.cutouts.shards import ShardSet
from dustpred.errors import InputError
from dustpred.models.checkpoint import TrainResult, load_torch, save_model, save_torch
from dustpred.models.inputs import InputStats, fit_input_stats
from dustpred.models.settings import UNetSettings
from dustpred.models.unet import build_unet
from dustpred.training.distributed import DistInfo, init_distributed
from dustpred.training.loop import HISTORY_COLUMNS, Trainer
from dustpred.training.resident import (
    ResidentData,
    derived_seed,
    load_resident,
)
from dustpred.training.validation import split_by_regions, split_random

log = logging.getLogger("dustpred.training.job")  # also when run as __main__ by torchrun

STATS_CUTOUTS = 1024  # cutouts used to fit the input normalisation


@dataclass
class TrainSpec:
    """Everything a training run needs (JSON-serialisable, passed to torchrun ranks)."""

    train_shards: list[str]
    model_path: str
    table_path: str
    resume_path: str
    params: dict
    seed: int
    threads: int = 1
    log_path: str | None = None
    # Replacement targets (e.g. E or B maps): an HDF5 file, its (N, H, W) dataset, and the
    # target's parity under a mirror image (-1 for B; see resident.ResidentData).
    target_path: str | None = None
    target_field: str | None = None
    target_parity: int = 1


def fingerprint(spec: TrainSpec, settings: UNetSettings) -> str:
    """Identity of a run for resuming: config slice (``settings.config``), seed and the
    training shards' names, sizes and modification times (a rerun on regenerated shards
    starts afresh)."""
    files = []
    for path in spec.train_shards:
        st = os.stat(path)
        files.append([os.fspath(path), st.st_size, st.st_mtime_ns])
    identity = {"params": settings.config, "seed": spec.seed, "shards": files}
    if spec.target_path:
        st = os.stat(spec.target_path)
        identity["target"] = [spec.target_path, st.st_size, st.st_mtime_ns, spec.target_field]
    blob = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _n_processes(gpus: int) -> int:
    if gpus <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available < gpus:
        log.warning("%d GPUs requested but %d visible: training in one process", gpus, available)
        return 1
    return gpus


def train_unet(
    train_shards: Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    table_path: str | os.PathLike,
    *,
    params: dict,
    seed: int,
    resume_path: str | os.PathLike,
    threads: int = 1,
    gpus: int = 0,
    log_path: str | os.PathLike | None = None,
    target: tuple[str, str, int] | None = None,
    _on_epoch_end: Callable[[int, TrainResult], None] | None = None,
) -> TrainResult | None:
    """Train the U-Net on training shards; write the model file and the per-epoch table.

    Parameters
    ----------
    train_shards : list of path
        Cutout shards of the training subset.
    model_path : path
        Output model file (format of :mod:`dustpred.models.checkpoint`: weights of the last
        and of the best validation epoch, config slice, normalisation, versions).
    table_path : path
        Output CSV, one row per epoch with columns :data:`HISTORY_COLUMNS`.
    params : dict
        The ``unet`` config slice.
    seed : int
        Training seed.
    resume_path : path
        Where the per-epoch resume state lives (not a workflow output: it survives a killed
        job, and is deleted after success).
    threads : int
        CPU threads (split among processes when several run).
    gpus : int
        GPUs given to the job: with N > 1 visible, N processes are launched via torchrun.
    log_path : path, optional
        The job's log file (ranks > 0 of a distributed run only log to stderr).
    target : (path, dataset, parity), optional
        Train on other targets than the shards' dust: the ``(N, H, W)`` dataset of an HDF5
        file, one map per training cutout (the polarisation stage's E or B maps), with its
        parity under a mirror image (1, or -1 for a B map).
    """
    target_path, target_field, target_parity = target or (None, None, 1)
    spec = TrainSpec(
        [os.fspath(p) for p in train_shards],
        os.fspath(model_path),
        os.fspath(table_path),
        os.fspath(resume_path),
        dict(params),
        int(seed),
        int(threads),
        os.fspath(log_path) if log_path else None,
        os.fspath(target_path) if target_path else None,
        target_field,
        int(target_parity),
    )
    nproc = _n_processes(int(gpus or 0))
    if nproc > 1:
        launch_distributed(spec, nproc)
        return None
    return run_training(spec, _on_epoch_end=_on_epoch_end)


def launch_distributed(spec: TrainSpec, nproc: int, *, env: dict | None = None) -> None:
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node nproc -m
    dustpred.training.job SPEC`` and wait for it (one process per GPU, or per CPU share with
    gloo when no GPU is visible). The spec is written next to the resume state."""
    spec_path = os.path.join(os.path.dirname(spec.resume_path) or ".", "spec.json")
    atomic_write(spec_path, lambda tmp: tmp.write_text(json.dumps(asdict(spec), indent=1)))
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(dustpred.__file__)))
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    child_env.setdefault("OMP_NUM_THREADS", str(max(1, spec.threads // nproc)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "dustpred.training.job",
        spec_path,
    ]
    log.info("launching %d training processes: %s", nproc, " ".join(cmd))
    done = subprocess.run(cmd, env=child_env, check=False)
    if done.returncode == 0:
        os.remove(spec_path)
        try:
            os.rmdir(os.path.dirname(spec_path))  # only if empty
        except OSError:
            pass
    else:
        raise RuntimeError(
            f"distributed training ({nproc} processes) failed with exit code "
            f"{done.returncode}; see the log above and {spec.log_path}"
        )


def _validation_split(shards: ShardSet, settings: UNetSettings, seed: int):
    """(train, validation) indices of ``unet.validation`` (:mod:`dustpred.training.validation`)."""
    if settings.validation == "random":
        return split_random(shards.n, settings.validation_fraction, seed)
    pos = shards.load(["lon", "lat", "psi"])
    train, val, _ = split_by_regions(
        pos["lon"],
        pos["lat"],
        pos["psi"],
        fraction=settings.validation_fraction,
        nside=settings.validation_region_nside,
        seed=seed,
        npix=shards.npix,
        reso_arcmin=shards.reso_arcmin,
    )
    return train, val


def run_training(
    spec: TrainSpec, *, _on_epoch_end: Callable[[int, TrainResult], None] | None = None
) -> TrainResult:
    """Train in this process (rank of a torchrun group if one is set up)."""
    settings = UNetSettings.from_config(spec.params)
    info, device = init_distributed(settings.device, settings.cuda_graphs)
    threads = max(1, spec.threads // info.world) if device.type == "cpu" else spec.threads
    torch.set_num_threads(max(1, threads))
    shards = ShardSet(spec.train_shards, threads=threads, target=_replacement_targets(spec))
    train_idx, val_idx = _validation_split(shards, settings, spec.seed)
    if info.is_main:
        _log_start(spec, settings, shards, len(train_idx), len(val_idx), device, info)
    stats, data = _prepare(shards, train_idx, settings, spec.seed, device, info, spec.target_parity)
    torch.manual_seed(derived_seed(spec.seed, 0, 3))
    model = build_unet(stats.in_channels, settings)
    trainer = Trainer(
        model,
        data,
        train_idx,
        val_idx,
        settings,
        seed=spec.seed,
        device=device,
        side_deg=shards.side_deg,
        dist_info=info,
    )
    fp = fingerprint(spec, settings)
    start, result = _resume(spec, trainer, fp, settings.epochs, info)

    def on_epoch_end(epoch: int, res: TrainResult) -> None:
        if info.is_main:
            state = trainer.state(epoch, res)
            state["fingerprint"] = fp
            save_torch(state, spec.resume_path)
        if info.active:
            dist.barrier()
        if _on_epoch_end is not None:
            _on_epoch_end(epoch, res)

    result = trainer.fit(
        settings.epochs, start_epoch=start, result=result, on_epoch_end=on_epoch_end
    )
    if info.is_main:
        _write_outputs(spec, trainer, result, settings, stats, shards, info)
    if info.active:
        dist.barrier()
    return result


def _replacement_targets(spec: TrainSpec) -> np.ndarray | None:
    """The ``(N, H, W)`` replacement targets of ``spec``, or None (the shards' own)."""
    if not spec.target_path:
        return None
    with h5py.File(spec.target_path, "r") as f:
        if spec.target_field not in f:
            raise InputError(
                f"{spec.target_path}: no dataset {spec.target_field!r}; expected the training "
                f"targets there (found {sorted(f)})"
            )
        return f[spec.target_field][()]


def _log_start(
    spec: TrainSpec,
    settings: UNetSettings,
    shards: ShardSet,
    n_train: int,
    n_val: int,
    device: torch.device,
    info: DistInfo,
) -> None:
    log.info(
        "U-Net %s (%s inputs, widths %s), seed %d: %d training + %d validation cutouts of "
        "%dx%d, batch %d, %d epochs, on %s x %d",
        settings.variant,
        settings.input_kind,
        list(settings.widths),
        spec.seed,
        n_train,
        n_val,
        shards.npix,
        shards.npix,
        settings.batch_size,
        settings.epochs,
        device.type,
        info.world,
    )


def _prepare(
    shards: ShardSet,
    train_idx: np.ndarray,
    settings: UNetSettings,
    seed: int,
    device: torch.device,
    info: DistInfo,
    parity: int = 1,
) -> tuple[InputStats, ResidentData]:
    """The input normalisation fitted on (part of) the training cutouts, and every cutout
    prepared with it and held in memory."""
    stats = fit_input_stats(
        shards,
        train_idx,
        input_kind=settings.input_kind,
        variant=settings.variant,
        max_cutouts=STATS_CUTOUTS,
        seed=seed,
        target_scale=settings.target_scale,
    )
    t0 = time.perf_counter()
    data = load_resident(shards, stats, device, parity=parity)
    if info.is_main:
        log.info(
            "prepared %d cutouts (%s, %s) in %.1f s",
            data.n,
            data.features.dtype,
            data.features.device,
            time.perf_counter() - t0,
        )
    return stats, data


def _resume(
    spec: TrainSpec, trainer: Trainer, fp: str, epochs: int, info: DistInfo
) -> tuple[int, TrainResult]:
    """(epochs done, result so far) from the resume state if it has fingerprint ``fp``;
    (0, empty result) otherwise."""
    start, result = 0, TrainResult()
    state = _read_resume_state(spec.resume_path, info) if os.path.exists(spec.resume_path) else None
    if state is not None:
        if state.get("fingerprint") == fp and state.get("epoch", 0) <= epochs:
            result = trainer.load_state(state)
            start = int(state["epoch"])
            if info.is_main:
                log.info("resuming from %s after epoch %d", spec.resume_path, start)
        elif info.is_main:
            log.info("ignoring %s: it belongs to another configuration or input", spec.resume_path)
        del state
    return start, result


def _read_resume_state(path: str | os.PathLike, info: DistInfo) -> dict | None:
    """The resume state at ``path``, or None when it cannot be read: then it is renamed to
    ``<path>.damaged`` (by rank 0, with a warning) and training starts afresh, so a damaged
    file can never block a rerun."""
    try:
        state = load_torch(path, "training resume state")
        if not isinstance(state, dict):
            raise InputError(f"{path}: holds a {type(state).__name__}; expected a dict")
        return state
    except InputError as err:
        if info.is_main:
            damaged = f"{os.fspath(path)}.damaged"
            os.replace(path, damaged)
            log.warning("%s; moved aside to %s, training starts from epoch 1", err, damaged)
        return None


def _write_outputs(
    spec: TrainSpec,
    trainer: Trainer,
    result: TrainResult,
    settings: UNetSettings,
    stats: InputStats,
    shards: ShardSet,
    info: DistInfo,
) -> None:
    """Rank 0: the model file and the epoch table; then remove the resume state."""
    save_model(
        spec.model_path,
        trainer.net,
        result,
        settings=settings,
        stats=stats,
        seed=spec.seed,
        meta={
            "npix": shards.npix,
            "side_deg": shards.side_deg,
            "world_size": info.world,
            "train_shards": spec.train_shards,
        },
    )
    table = pd.DataFrame(result.history, columns=HISTORY_COLUMNS)
    atomic_write(spec.table_path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.8g"))
    if os.path.exists(spec.resume_path):
        os.remove(spec.resume_path)
    try:
        os.rmdir(os.path.dirname(spec.resume_path) or ".")  # only if empty
    except OSError:
        pass
    log.info(
        "wrote %s (best validation epoch %d) and %s",
        spec.model_path,
        result.best_epoch,
        spec.table_path,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of each torchrun rank: ``python -m dustpred.training.job SPEC.json``."""
    from dustpred.logutil import setup_logging

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m dustpred.training.job SPEC.json")
    with open(args[0]) as f:
        spec = TrainSpec(**json.load(f))
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(spec.log_path if rank == 0 else None)
    try:
        run_training(spec)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
