"""U-Net training: the paper's recipe, resumable, fast on a GPU, and data-parallel.

Recipe (paper section 2.3; every number from the ``unet`` config slice): Adam, learning rate
``lr`` times ``lr_decay_factor`` every ``lr_decay_every`` epochs, ``epochs`` epochs, batch
``batch_size``, the loss of :mod:`dustpred.losses`, gradient-norm clipping at ``grad_clip``.
A fraction ``validation_fraction`` of the training cutouts is held out (seeded) for
validation; the weights with the lowest validation loss are kept besides the last ones.
Augmentation: each training sample gets one of the 8 rotations/flips of the square (seeded).

Randomness: the model initialisation comes from ``seed``; at the start of every epoch the
data order, the augmentations and the dropout generator are re-seeded from
``(seed, epoch[, rank])``. A run therefore depends only on the seed and the epoch it starts
from, and a resumed run continues exactly as the uninterrupted one would (bitwise on CPU).

Resume: after every epoch, rank 0 writes a resume state (model, optimizer, epoch, history,
best weights) atomically to ``resume_path``. A new run with the same fingerprint (config
slice, seed, training shards' names, sizes and mtimes) continues from it; any other
fingerprint starts afresh. The state is deleted once the final model file is written.

On CUDA: bf16 autocast, channels_last, the prepared training set resident in GPU memory (in
bf16) when it fits, fused Adam, and the whole training step (gather, augmentation, forward,
loss, backward, clipping, optimizer step) captured in one CUDA graph and replayed; optional
``torch.compile``. A non-finite loss stops training with an error naming epoch and batch
(checked every step on CPU, once per epoch on CUDA so that steps never wait for the host).

Several GPUs: :func:`train_unet` re-launches itself through ``torch.distributed.run`` with one
process per GPU (:func:`launch_distributed`); every rank holds the data, each global batch
is split across ranks without overlap, BatchNorm statistics are synchronised across ranks
(``sync_batchnorm``), gradients are averaged by DistributedDataParallel, metrics are summed
over ranks, and only rank 0 writes files. The same code runs on CPU with the gloo backend
(tested there against one process). Under DDP the training step runs eagerly unless
``cuda_graphs: true`` (graph capture of NCCL all-reduces is supported by PyTorch but has not
been run on several GPUs here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

import dustpred
from dustpred.atomic import atomic_path, atomic_write
from dustpred.errors import ConfigError, InputError
from dustpred.losses import PaperLoss
from dustpred.models.inputs import InputStats, fit_input_stats, prepare_features
from dustpred.models.unet import UNet, build_unet
from dustpred.shards import ShardSet

log = logging.getLogger("dustpred.training")  # also when run as __main__ by torchrun

FORMAT = "dustpred-unet"
FORMAT_VERSION = 1
HISTORY_COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "val_loss",
    "train_r50",
    "train_r150",
    "val_r50",
    "val_r150",
    "samples_per_s",
    "seconds",
]
# Defaults for keys the config schema may leave out (tests and the benchmark pass partial dicts).
DEFAULTS = {
    "variant": "paper",
    "input_kind": "cube",
    "widths": [64, 128, 256, 512],
    "bottleneck": None,
    "dropout": 0.3,
    "loss_lambda": 30.0,
    "epochs": 40,
    "batch_size": 64,
    "lr": 1.0e-3,
    "lr_decay_every": 10,
    "lr_decay_factor": 0.1,
    "validation_fraction": 0.05,
    "grad_clip": 1.0,
    "augment": True,
    "sync_batchnorm": True,
    "device": "auto",
    "cuda_graphs": "auto",
    "compile": False,
}
STATS_CUTOUTS = 1024  # cutouts used to fit the input normalisation
GRAPH_WARMUP_STEPS = 3  # eager steps before capturing the training step (11 under DDP)


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch and batch."""


def with_defaults(params: dict) -> dict:
    """The ``unet`` config slice with defaults filled in and values checked."""
    p = {**DEFAULTS, **(params or {})}
    for key in ("epochs", "batch_size", "lr_decay_every"):
        if int(p[key]) < 1:
            raise ConfigError(f"config key 'unet.{key}': got {p[key]}, expected an integer >= 1")
    if not 0.0 <= float(p["validation_fraction"]) < 1.0:
        raise ConfigError(
            f"config key 'unet.validation_fraction': got {p['validation_fraction']}, "
            "expected 0 <= value < 1"
        )
    if p["device"] not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"config key 'unet.device': got {p['device']!r}, expected auto|cpu|cuda")
    if str(p["cuda_graphs"]).lower() not in ("auto", "true", "false"):
        raise ConfigError(
            f"config key 'unet.cuda_graphs': got {p['cuda_graphs']!r}, expected auto|true|false"
        )
    return p


def _seed_of(*words: int) -> int:
    """A 63-bit seed derived from integers (independent streams per purpose)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(2, np.uint64)[0] >> 1)


def versions() -> dict[str, str]:
    """Software versions stored with a model."""
    return {
        "dustpred": dustpred.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cuda": str(torch.version.cuda),
    }


# --- distributed --------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def _init_distributed(device_pref: str, cuda_graphs="auto") -> tuple[DistInfo, torch.device]:
    """Join the process group that torchrun set up (if any) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("config key 'unet.device': 'cuda' requested but no GPU is visible")
    if world <= 1:
        return DistInfo(), torch.device("cuda" if use_cuda else "cpu")
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    else:
        device = torch.device("cpu")
    if use_cuda and str(cuda_graphs).lower() == "true":
        # Capturing NCCL all-reduces in a CUDA graph needs NCCL's watchdog error handling off
        # (PyTorch's CUDA-graph notes); it must be set before the process group exists.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info, device


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        g = grad.clone()
        dist.all_reduce(g)
        return g


class GenericSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics span all ranks, for any backend (gloo on CPU too).

    ``torch.nn.SyncBatchNorm`` runs on GPUs only; this one sums the statistics over ranks
    with a differentiable all-reduce, so gradients flow through the global statistics exactly
    as in one process holding the whole batch (DDP then averages the per-rank gradients).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        s = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), count]))
        n = s[-1]
        mean = s[:-1] / n
        d = x - mean.view(1, c, 1, 1)
        var = all_reduce((d * d).sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
                self.num_batches_tracked.add_(1)
        y = d * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y


def _convert_generic_sync_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a :class:`GenericSyncBatchNorm` (in place,
    keeping the same parameter and buffer tensors, so state dicts are unchanged)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GenericSyncBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            setattr(module, name, new)
        else:
            _convert_generic_sync_bn(child)
    return module


# --- data ---------------------------------------------------------------------------------


def dihedral_permutations(n: int) -> torch.Tensor:
    """Pixel permutations (8, n*n) of the 8 rotations/reflections of an n x n image:
    ``image.flatten()[perm[g]]`` is the image transformed by element g."""
    base = torch.arange(n * n).view(n, n)
    perms = []
    for g in range(8):
        a = base.flip(-1) if g >= 4 else base
        perms.append(torch.rot90(a, g % 4, dims=(-2, -1)).reshape(-1))
    return torch.stack(perms)


@dataclass
class ResidentData:
    """Prepared cutouts held in memory (device memory on CUDA when they fit).

    features : (N, F, H, W), or (N, H, W, F) if ``nhwc`` (channels-last storage)
    base : (N, H, W) float32 scaled integrated map of the residual variant, or None
    target : (N, H, W) float32 normalised target; mask : (N, H, W) bool (True = masked)
    """

    features: torch.Tensor
    base: torch.Tensor | None
    target: torch.Tensor
    mask: torch.Tensor
    nhwc: bool = False

    @property
    def n(self) -> int:
        return self.target.shape[0]

    @property
    def npix(self) -> int:
        return self.target.shape[-1]

    def batch(self, idx: torch.Tensor, aug: torch.Tensor | None = None):
        """Gather cutouts ``idx`` (b,) and apply to each the rotation/flip ``aug`` (b,) codes
        0-7 of :func:`dihedral_permutations` if given. Returns x (b, C, H, W) float32
        (channels_last strides if ``nhwc``), target (b, H, W) and mask (b, H, W), on the
        data's device. On CUDA this is a fixed sequence of kernels (capturable in a graph);
        on CPU each sample is transformed on its own (faster there than a gather)."""
        if aug is not None and self.features.device.type == "cpu" and not self.nhwc:
            return self._batch_per_sample(idx, aug)
        f = self.features.index_select(0, idx)
        t = self.target.index_select(0, idx)
        m = self.mask.index_select(0, idx)
        base = self.base.index_select(0, idx) if self.base is not None else None
        b, h, w = t.shape
        if aug is not None:
            perm = self._perms(f.device).index_select(0, aug)
            hw = h * w
            if self.nhwc:
                c = f.shape[-1]
                f = f.reshape(b, hw, c).gather(1, perm[:, :, None].expand(b, hw, c))
                f = f.view(b, h, w, c)
            else:
                c = f.shape[1]
                f = f.reshape(b, c, hw).gather(2, perm[:, None, :].expand(b, c, hw))
                f = f.view(b, c, h, w)
            t = t.reshape(b, hw).gather(1, perm).view(b, h, w)
            m = m.reshape(b, hw).gather(1, perm).view(b, h, w)
            if base is not None:
                base = base.reshape(b, hw).gather(1, perm).view(b, h, w)
        return self._assemble(f, base, t, m)

    def _perms(self, device: torch.device) -> torch.Tensor:
        if getattr(self, "_perm_cache", None) is None or self._perm_cache.device != device:
            self._perm_cache = dihedral_permutations(self.npix).to(device)
        return self._perm_cache

    def _batch_per_sample(self, idx: torch.Tensor, aug: torch.Tensor):
        """CPU path of :meth:`batch`: each sample rotated/flipped and written into the batch."""
        b, n = len(idx), self.npix
        nf = self.features.shape[1]
        x = torch.empty((b, nf + (self.base is not None), n, n), dtype=torch.float32)
        t = torch.empty((b, n, n), dtype=self.target.dtype)
        m = torch.empty((b, n, n), dtype=self.mask.dtype)
        for j, (i, g) in enumerate(zip(idx.tolist(), aug.tolist(), strict=True)):
            f = self.features[i]
            # CPUs flip float16 slowly: convert first.
            x[j, :nf] = dihedral_transform(f.float() if f.dtype == torch.float16 else f, g)
            if self.base is not None:
                x[j, nf] = dihedral_transform(self.base[i], g)
            t[j] = dihedral_transform(self.target[i], g)
            m[j] = dihedral_transform(self.mask[i], g)
        return x, t, m

    def _assemble(self, f, base, t, m):
        x = f.permute(0, 3, 1, 2) if self.nhwc else f
        x = x.float()
        if base is not None:
            x = torch.cat([x, base.unsqueeze(1)], dim=1)
        if self.nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, t, m


def dihedral_transform(image: torch.Tensor, g: int) -> torch.Tensor:
    """Element ``g`` (0-7) of the rotations/flips of :func:`dihedral_permutations` applied to
    an image (..., H, W)."""
    if g >= 4:
        image = image.flip(-1)
    return torch.rot90(image, g % 4, dims=(-2, -1)) if g % 4 else image


def load_resident(
    shards: ShardSet,
    stats: InputStats,
    device: torch.device,
    *,
    chunk: int = 256,
) -> ResidentData:
    """Read every cutout of ``shards``, prepare it with ``stats`` and keep it in memory.

    On CUDA the features are stored in bf16, channels-last, in GPU memory if they take less
    than 60 % of the free memory (host memory otherwise). On CPU they are stored in float32,
    or float16 above 4 GiB (standardised values, so float16's 3 digits are ample).
    """
    n, (h, w) = shards.n, shards.shape
    nf = stats.n_features
    cuda = device.type == "cuda"
    nbytes = n * nf * h * w * (2 if cuda else 4)
    if cuda:
        dtype = torch.bfloat16
        free, _ = torch.cuda.mem_get_info(device)
        store = device if nbytes + n * h * w * 9 < 0.6 * free else torch.device("cpu")
        if store.type == "cpu":
            log.warning(
                "training set (%.1f GB) does not fit in GPU memory (%.1f GB free): kept in "
                "host memory, batches copied each step (slower, no CUDA graphs)",
                nbytes / 1e9,
                free / 1e9,
            )
    else:
        # float16 halves the memory, but CPUs convert and permute it slowly: only if needed.
        dtype = torch.float32 if nbytes <= 4 * 2**30 else torch.float16
        store = device
    nhwc = cuda
    shape = (n, h, w, nf) if nhwc else (n, nf, h, w)
    features = torch.empty(shape, dtype=dtype, device=store)
    residual = stats.variant == "residual"
    base = torch.empty((n, h, w), dtype=torch.float32, device=store) if residual else None
    target = torch.empty((n, h, w), dtype=torch.float32, device=store)
    mask = torch.empty((n, h, w), dtype=torch.bool, device=store)
    work = device  # prepare on the GPU when there is one (asinh of 10^9 values is slow on CPU)
    for start, d in shards.iter_chunks(["inputs", "target", "mask"], chunk):
        stop = start + len(d["target"])
        raw = torch.from_numpy(np.asarray(d["inputs"], dtype=np.float32)).to(work)
        good = torch.from_numpy(np.asarray(d["mask"]) == 0).to(work)
        feats, b = prepare_features(raw, good, stats, inplace=True)
        if nhwc:
            feats = feats.permute(0, 2, 3, 1)
        features[start:stop] = feats.to(store, dtype)
        if residual:
            base[start:stop] = b.to(store)
        t = torch.from_numpy(np.asarray(d["target"], dtype=np.float32)).to(work)
        target[start:stop] = (t * good / stats.target_scale).to(store)
        mask[start:stop] = (~good).to(store)
    if store.type == "cpu" and cuda:
        features = features.pin_memory()
    return ResidentData(features, base, target, mask, nhwc)


def split_train_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` cutouts into sorted (train, validation) index arrays."""
    n_val = int(round(fraction * n)) if fraction > 0 else 0
    n_val = min(max(n_val, 1 if fraction > 0 else 0), n - 1)
    perm = np.random.default_rng(_seed_of(seed, 11)).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def epoch_batches(
    train_idx: torch.Tensor, batch: int, dist_info: DistInfo, seed: int, epoch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's cutout indices and augmentation codes (0-7) for one epoch, each of shape
    (steps, batch / world): every global batch is drawn from the seeded (seed, epoch)
    permutation of ``train_idx`` (the last incomplete batch is dropped) and split into
    ``world`` consecutive, disjoint slices, one per rank."""
    world, local = dist_info.world, batch // dist_info.world
    steps = len(train_idx) // batch
    g = torch.Generator().manual_seed(_seed_of(seed, epoch, 1))
    order = torch.randperm(len(train_idx), generator=g)[: steps * batch]
    idx = train_idx[order].view(steps, world, local)
    aug = torch.randint(0, 8, (steps, world, local), generator=g)
    r = dist_info.rank
    return idx[:, r].contiguous(), aug[:, r].contiguous()


# --- training -------------------------------------------------------------------------------


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_state: dict | None = None


class Trainer:
    """Train ``model`` on ``data`` (see module docstring); :meth:`fit` runs the epochs.

    Parameters
    ----------
    model : UNet
    data : ResidentData
    train_idx, val_idx : ndarray
        Cutout indices of ``data`` to train and validate on.
    params : dict
        The ``unet`` config slice (see :func:`with_defaults`).
    seed : int
    device : torch.device
    side_deg : float
        Cutout side in degrees (for the r50/r150 modes of the loss).
    dist_info : DistInfo, optional
    """

    def __init__(
        self,
        model: UNet,
        data: ResidentData,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        params: dict,
        *,
        seed: int,
        device: torch.device,
        side_deg: float,
        dist_info: DistInfo | None = None,
    ) -> None:
        self.p = with_defaults(params)
        self.seed = int(seed)
        self.device = device
        self.dist = dist_info or DistInfo()
        self.cuda = device.type == "cuda"
        self.data = data
        self.net = model.to(device)
        if self.cuda:
            self.net = self.net.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self.batch = int(self.p["batch_size"])
        if self.batch % self.dist.world:
            raise ConfigError(
                f"config key 'unet.batch_size': {self.batch} is not divisible by the "
                f"{self.dist.world} training processes; expected a multiple"
            )
        self.local_batch = self.batch // self.dist.world
        self.train_idx = torch.as_tensor(np.asarray(train_idx), dtype=torch.long)
        self.val_idx = torch.as_tensor(np.asarray(val_idx), dtype=torch.long)
        self.steps = len(self.train_idx) // self.batch
        if self.steps < 1:
            raise InputError(
                f"training set: {len(self.train_idx)} cutouts after the validation hold-out, "
                f"fewer than one batch of {self.batch}; expected more cutouts or a smaller "
                "'unet.batch_size'"
            )
        if self.dist.active and self.p["sync_batchnorm"]:
            if self.cuda:
                self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
            else:
                self.net = _convert_generic_sync_bn(self.net)
        self.model: nn.Module = self.net
        if self.dist.active:
            with warnings.catch_warnings():
                # torch 2.13 renames broadcast_buffers; 2.11 (the GPU machines) knows only it.
                warnings.simplefilter("ignore", FutureWarning)
                self.model = nn.parallel.DistributedDataParallel(
                    self.net,
                    device_ids=[device.index] if self.cuda else None,
                    broadcast_buffers=False,
                    gradient_as_bucket_view=True,
                )
        compile_mode = self.p["compile"]
        if compile_mode:
            mode = compile_mode if isinstance(compile_mode, str) else None
            self.train_model = torch.compile(self.model, mode=mode)
        else:
            self.train_model = self.model
        self.loss_fn = PaperLoss(data.npix, side_deg, float(self.p["loss_lambda"])).to(device)
        self.params = [q for q in self.net.parameters() if q.requires_grad]
        graphs = str(self.p["cuda_graphs"]).lower()
        self.use_graphs = (
            self.cuda
            and data.features.device.type == "cuda"
            and (graphs == "true" or (graphs == "auto" and not self.dist.active))
        )
        if self.cuda:
            # A tensor learning rate lets a captured optimizer step see schedule changes.
            lr = torch.tensor(float(self.p["lr"]), device=device)
            self.opt = torch.optim.Adam(self.params, lr=lr, fused=True, capturable=True)
        else:
            self.opt = torch.optim.Adam(self.params, lr=float(self.p["lr"]))
        self.acc = torch.zeros(
            3, dtype=torch.float64 if not self.cuda else torch.float32, device=device
        )
        self.graph = None
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
            if self.cuda
            else torch.autocast("cpu", enabled=False)
        )

    # -- schedule
    def lr_at(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``: step decay."""
        every, factor = int(self.p["lr_decay_every"]), float(self.p["lr_decay_factor"])
        return float(self.p["lr"]) * factor ** (epoch // every)

    def _set_lr(self, value: float) -> None:
        for group in self.opt.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(value)
            else:
                group["lr"] = value

    # -- one step
    def _step_body(self, idx: torch.Tensor, aug: torch.Tensor | None) -> torch.Tensor:
        x, t, m = self.data.batch(idx, aug)
        if x.device != self.device:  # training set kept in host memory
            x, t, m = (v.to(self.device, non_blocking=True) for v in (x, t, m))
        with self.autocast:
            pred = self.train_model(x)
        loss, r = self.loss_fn(pred, t, m)
        loss.backward()
        if self.p["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(
                self.params, float(self.p["grad_clip"]), foreach=self.cuda
            )
        self.opt.step()
        b = t.shape[0]
        stat = torch.stack([loss.detach() * b, r[:, 0].sum(), r[:, 1].sum()])
        self.acc.add_(stat.to(self.acc.dtype))
        return loss.detach()

    def _epoch_batches(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx, aug = epoch_batches(self.train_idx, self.batch, self.dist, self.seed, epoch)
        dev = self.data.features.device
        return idx.to(dev), (aug.to(dev) if self.p["augment"] else None)

    def _train_epoch(self, epoch: int, total_epochs: int) -> dict:
        torch.manual_seed(_seed_of(self.seed, epoch, 2, self.dist.rank))
        self._set_lr(self.lr_at(epoch))
        self.net.train()
        idx, aug = self._epoch_batches(epoch)
        self.acc.zero_()
        losses = torch.empty(self.steps, device=self.device)
        log_every = max(1, self.steps // 4)
        if self.cuda:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        for s in range(self.steps):
            a = aug[s] if aug is not None else None
            if self.use_graphs:
                losses[s] = self._graph_step(idx[s], a)
            else:
                self.opt.zero_grad(set_to_none=True)
                loss = self._step_body(idx[s], a)
                losses[s] = loss
                if not self.cuda and not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"non-finite training loss ({loss.item()}) at epoch {epoch + 1}, "
                        f"batch {s + 1} of {self.steps}"
                    )
            if (s + 1) % log_every == 0 and s + 1 < self.steps and self.dist.is_main:
                acc = self.acc.tolist()
                n = (s + 1) * self.local_batch
                log.info(
                    "epoch %d/%d batch %d/%d: loss %.4f r50 %.4f r150 %.4f (%.0f samples/s)",
                    epoch + 1,
                    total_epochs,
                    s + 1,
                    self.steps,
                    acc[0] / n,
                    acc[1] / n,
                    acc[2] / n,
                    (s + 1) * self.batch / (time.perf_counter() - t0),
                )
        if self.cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        bad = torch.nonzero(~torch.isfinite(losses)).flatten()
        bad = self._reduce(
            torch.tensor([int(bad[0]) if len(bad) else -1], dtype=torch.float64), op="max"
        )
        if bad[0] >= 0:
            raise TrainingDivergedError(
                f"non-finite training loss at epoch {epoch + 1}, batch {int(bad[0]) + 1} of "
                f"{self.steps}"
            )
        acc = self._reduce(self.acc.double().cpu())
        n = self.steps * self.batch
        return {
            "train_loss": acc[0].item() / n,
            "train_r50": acc[1].item() / n,
            "train_r150": acc[2].item() / n,
            "samples_per_s": n / seconds,
            "train_seconds": seconds,
        }

    def _graph_step(self, idx: torch.Tensor, aug: torch.Tensor | None) -> torch.Tensor:
        """Run one training step through the captured CUDA graph (capturing it first after a
        few eager warm-up steps on a side stream)."""
        if self.graph is not None:
            self._static_idx.copy_(idx)
            if aug is not None:
                self._static_aug.copy_(aug)
            self.graph.replay()
            return self._static_loss
        warm = getattr(self, "_warm", 0)
        need = 11 if self.dist.active else GRAPH_WARMUP_STEPS
        if warm < need:
            if warm == 0:
                self._side = torch.cuda.Stream(self.device)
            self._side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._side):
                self.opt.zero_grad(set_to_none=True)
                loss = self._step_body(idx, aug)
            torch.cuda.current_stream(self.device).wait_stream(self._side)
            self._warm = warm + 1
            return loss
        self._static_idx = idx.clone()
        self._static_aug = aug.clone() if aug is not None else None
        self.opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_loss = self._step_body(self._static_idx, self._static_aug)
        self.graph = graph
        log.info("training step captured in a CUDA graph")
        graph.replay()
        return self._static_loss

    def _reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if not self.dist.active:
            return t
        backend_dev = self.device if self.cuda else torch.device("cpu")
        t = t.to(backend_dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.cpu()

    @torch.no_grad()
    def validate(self) -> dict:
        """Loss, r50, r150 averaged over the validation cutouts (all ranks' shares)."""
        local = self.val_idx[self.dist.rank :: self.dist.world].to(self.data.features.device)
        sums = torch.zeros(4, dtype=torch.float64)
        self.net.eval()
        eval_batch = 4 * self.local_batch
        for lo in range(0, len(local), eval_batch):
            x, t, m = self.data.batch(local[lo : lo + eval_batch])
            x, t, m = x.to(self.device), t.to(self.device), m.to(self.device)
            with self.autocast:
                pred = self.net(x)
            loss, r = self.loss_fn(pred, t, m)
            b = t.shape[0]
            sums += torch.tensor(
                [loss.item() * b, r[:, 0].sum().item(), r[:, 1].sum().item(), b],
                dtype=torch.float64,
            )
        self.net.train()
        sums = self._reduce(sums)
        n = sums[3].item()
        if n == 0:
            return {"val_loss": math.nan, "val_r50": math.nan, "val_r150": math.nan}
        return {
            "val_loss": sums[0].item() / n,
            "val_r50": sums[1].item() / n,
            "val_r150": sums[2].item() / n,
        }

    # -- state
    def state(self, epoch: int, result: TrainResult) -> dict:
        return {
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "best_state": result.best_state,
        }

    def load_state(self, state: dict) -> TrainResult:
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.cuda:
            for group in self.opt.param_groups:
                lr = group["lr"]
                group["lr"] = torch.tensor(float(lr), device=self.device)
        return TrainResult(
            list(state["history"]),
            state["best_epoch"],
            state["best_val_loss"],
            state["best_state"],
        )

    def fit(
        self,
        epochs: int,
        *,
        start_epoch: int = 0,
        result: TrainResult | None = None,
        on_epoch_end: Callable[[int, TrainResult], None] | None = None,
    ) -> TrainResult:
        """Train epochs ``start_epoch .. epochs - 1`` (0-based); ``on_epoch_end(epoch, result)``
        runs after each (epoch = number of completed epochs)."""
        result = result or TrainResult()
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            row = {"epoch": epoch + 1, "lr": self.lr_at(epoch)}
            row.update(self._train_epoch(epoch, epochs))
            row.update(self.validate())
            row["seconds"] = time.perf_counter() - t0
            train_seconds = row.pop("train_seconds")
            result.history.append({k: row.get(k, math.nan) for k in HISTORY_COLUMNS})
            val = row["val_loss"]
            score = val if math.isfinite(val) else row["train_loss"]
            if score < result.best_val_loss or result.best_state is None:
                result.best_val_loss = score
                result.best_epoch = epoch + 1
                result.best_state = {
                    k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()
                }
            if self.dist.is_main:
                log.info(
                    "epoch %d/%d: lr %.2g train loss %.4f r50 %.4f r150 %.4f | val loss %.4f "
                    "r50 %.4f r150 %.4f | %.0f samples/s, %.1f s (train %.1f s)%s",
                    epoch + 1,
                    epochs,
                    row["lr"],
                    row["train_loss"],
                    row["train_r50"],
                    row["train_r150"],
                    val,
                    row["val_r50"],
                    row["val_r150"],
                    row["samples_per_s"],
                    row["seconds"],
                    train_seconds,
                    " *best*" if result.best_epoch == epoch + 1 else "",
                )
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, result)
        return result


# --- the rule's entry point ----------------------------------------------------------------


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


def fingerprint(spec: TrainSpec) -> str:
    """Identity of a run for resuming: config slice, seed and the training shards' names,
    sizes and modification times (a rerun on regenerated shards starts afresh)."""
    files = []
    for path in spec.train_shards:
        st = os.stat(path)
        files.append([os.fspath(path), st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {"params": with_defaults(spec.params), "seed": spec.seed, "shards": files}, sort_keys=True
    )
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
    _on_epoch_end: Callable[[int, TrainResult], None] | None = None,
) -> TrainResult | None:
    """Train the U-Net on training shards; write the model file and the per-epoch table.

    Parameters
    ----------
    train_shards : list of path
        Cutout shards of the training subset.
    model_path : path
        Output model file (:func:`save_model` format; weights of the last and of the best
        validation epoch, config slice, normalisation, versions).
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
    """
    spec = TrainSpec(
        [os.fspath(p) for p in train_shards],
        os.fspath(model_path),
        os.fspath(table_path),
        os.fspath(resume_path),
        dict(params),
        int(seed),
        int(threads),
        os.fspath(log_path) if log_path else None,
    )
    nproc = _n_processes(int(gpus or 0))
    if nproc > 1:
        launch_distributed(spec, nproc)
        return None
    return run_training(spec, _on_epoch_end=_on_epoch_end)


def launch_distributed(spec: TrainSpec, nproc: int, *, env: dict | None = None) -> None:
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node nproc -m
    dustpred.training SPEC`` and wait for it (one process per GPU, or per CPU share with
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
        "dustpred.training",
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


def run_training(
    spec: TrainSpec, *, _on_epoch_end: Callable[[int, TrainResult], None] | None = None
) -> TrainResult:
    """Train in this process (rank of a torchrun group if one is set up)."""
    p = with_defaults(spec.params)
    info, device = _init_distributed(p["device"], p["cuda_graphs"])
    threads = max(1, spec.threads // info.world) if device.type == "cpu" else spec.threads
    torch.set_num_threads(max(1, threads))
    shards = ShardSet(spec.train_shards)
    train_idx, val_idx = split_train_validation(
        shards.n, float(p["validation_fraction"]), spec.seed
    )
    if info.is_main:
        log.info(
            "U-Net %s (%s inputs, widths %s), seed %d: %d training + %d validation cutouts of "
            "%dx%d, batch %d, %d epochs, on %s x %d",
            p["variant"],
            p["input_kind"],
            p["widths"],
            spec.seed,
            len(train_idx),
            len(val_idx),
            shards.npix,
            shards.npix,
            p["batch_size"],
            p["epochs"],
            device.type,
            info.world,
        )
    stats = fit_input_stats(
        shards,
        train_idx,
        input_kind=p["input_kind"],
        variant=p["variant"],
        max_cutouts=STATS_CUTOUTS,
        seed=spec.seed,
    )
    t0 = time.perf_counter()
    data = load_resident(shards, stats, device)
    if info.is_main:
        log.info(
            "prepared %d cutouts (%s, %s) in %.1f s",
            data.n,
            data.features.dtype,
            data.features.device,
            time.perf_counter() - t0,
        )
    torch.manual_seed(_seed_of(spec.seed, 0, 3))
    model = build_unet(stats.in_channels, p)
    trainer = Trainer(
        model,
        data,
        train_idx,
        val_idx,
        p,
        seed=spec.seed,
        device=device,
        side_deg=shards.side_deg,
        dist_info=info,
    )
    fp = fingerprint(spec)
    start, result = 0, TrainResult()
    if os.path.exists(spec.resume_path):
        state = torch.load(spec.resume_path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == fp and state.get("epoch", 0) <= int(p["epochs"]):
            result = trainer.load_state(state)
            start = int(state["epoch"])
            if info.is_main:
                log.info("resuming from %s after epoch %d", spec.resume_path, start)
        elif info.is_main:
            log.info("ignoring %s: it belongs to another configuration or input", spec.resume_path)
        del state

    def on_epoch_end(epoch: int, res: TrainResult) -> None:
        if info.is_main:
            state = trainer.state(epoch, res)
            state["fingerprint"] = fp
            _save_torch(state, spec.resume_path)
        if info.active:
            dist.barrier()
        if _on_epoch_end is not None:
            _on_epoch_end(epoch, res)

    result = trainer.fit(
        int(p["epochs"]), start_epoch=start, result=result, on_epoch_end=on_epoch_end
    )
    if info.is_main:
        save_model(
            spec.model_path,
            trainer.net,
            result,
            params=p,
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
        atomic_write(
            spec.table_path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.8g")
        )
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
    if info.active:
        dist.barrier()
    return result


# --- model files ----------------------------------------------------------------------------


def _save_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, through a file handle: saved to a path, torch names the
    archive inside after the (temporary) file, which would make the bytes differ per run."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def save_model(path, net: UNet, result: TrainResult, *, params, stats: InputStats, seed, meta):
    """Write the final model file atomically (a dict saved by ``torch.save``)."""
    model = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": {
            "in_channels": net.in_channels,
            "widths": list(net.widths),
            "bottleneck": params.get("bottleneck"),
            "dropout": float(params["dropout"]),
            "variant": net.variant,
        },
        "params": params,
        "stats": stats.to_dict(),
        "seed": int(seed),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "best_state_dict": result.best_state,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs": len(result.history),
        "versions": versions(),
        **meta,
    }
    _save_torch(model, path)


def load_model(path, *, which: str = "best", device="cpu") -> tuple[UNet, InputStats, dict]:
    """Load a model file: the network (eval mode) with the ``best`` (lowest validation loss)
    or ``last`` weights, its input normalisation, and the whole file's metadata."""
    try:
        blob = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"{path}: cannot read a model file ({exc})") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError(f"{path}: not a dustpred U-Net model file; expected format '{FORMAT}'")
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    cfg = blob["model_config"]
    net = UNet(cfg["in_channels"], cfg["widths"], cfg["bottleneck"], cfg["dropout"], cfg["variant"])
    state = blob["best_state_dict"] if which == "best" else blob["state_dict"]
    net.load_state_dict(state)
    net.to(device).eval()
    return net, InputStats.from_dict(blob["stats"]), blob


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of each torchrun rank: ``python -m dustpred.training SPEC.json``."""
    from dustpred.logutil import setup_logging

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m dustpred.training SPEC.json")
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
