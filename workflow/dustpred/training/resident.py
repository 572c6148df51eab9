"""The training set held in memory, its augmentations and the seeded order of each epoch.

:func:`load_resident` reads every cutout once, prepares it (:mod:`dustpred.models.inputs`)
and keeps it as a :class:`ResidentData`: in GPU memory, bf16 and channels-last on CUDA when it
fits; float32 (float16 above 4 GiB) on the CPU. :meth:`ResidentData.batch` gathers a batch and
applies to each sample one of the 8 rotations/flips of the square (the dihedral group,
:func:`dihedral_permutations`). :func:`epoch_batches` draws each epoch's batches, seeded
through :func:`derived_seed`, so a run depends only on its seed (the validation hold-out:
:mod:`dustpred.training.validation`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from dustpred.cutouts.shards import ShardSet
from dustpred.models.inputs import InputStats, prepare_features
from dustpred.training.distributed import DistInfo

log = logging.getLogger(__name__)


def derived_seed(*words: int) -> int:
    """A 63-bit seed derived from integers (independent streams per purpose)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(2, np.uint64)[0] >> 1)


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
    parity : 1, or -1 for a pseudo-scalar target (a B-mode map), whose sign a mirror image
    (augmentation codes 4-7) changes
    """

    features: torch.Tensor
    base: torch.Tensor | None
    target: torch.Tensor
    mask: torch.Tensor
    nhwc: bool = False
    parity: int = 1

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
            if self.parity != 1:
                t = t * torch.where(aug >= 4, float(self.parity), 1.0).to(t.dtype)[:, None, None]
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
            t[j] = dihedral_transform(self.target[i], g) * (self.parity if g >= 4 else 1)
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


def _storage(
    nbytes: int, extra_bytes: int, device: torch.device
) -> tuple[torch.dtype, torch.device]:
    """Dtype and device to keep ``nbytes`` of features (plus ``extra_bytes`` of targets and
    masks) in: bf16 on the GPU if it fits in 60 % of the free memory, else in host memory; on
    a CPU float32, or float16 above 4 GiB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        store = device if nbytes + extra_bytes < 0.6 * free else torch.device("cpu")
        if store.type == "cpu":
            log.warning(
                "training set (%.1f GB) does not fit in GPU memory (%.1f GB free): kept in "
                "host memory, batches copied each step (slower, no CUDA graphs)",
                nbytes / 1e9,
                free / 1e9,
            )
        return torch.bfloat16, store
    # float16 halves the memory, but CPUs convert and permute it slowly: only if needed.
    return (torch.float32 if nbytes <= 4 * 2**30 else torch.float16), device


def load_resident(
    shards: ShardSet,
    stats: InputStats,
    device: torch.device,
    *,
    chunk: int = 256,
    parity: int = 1,
) -> ResidentData:
    """Read every cutout of ``shards``, prepare it with ``stats`` and keep it in memory.

    On CUDA the features are stored in bf16, channels-last, in GPU memory if they take less
    than 60 % of the free memory (host memory otherwise). On CPU they are stored in float32,
    or float16 above 4 GiB (standardised values, so float16's 3 digits are ample).
    ``parity``: -1 for a pseudo-scalar target (:class:`ResidentData`).
    """
    n, (h, w) = shards.n, shards.shape
    nf = stats.n_features
    cuda = device.type == "cuda"
    nbytes = n * nf * h * w * (2 if cuda else 4)
    dtype, store = _storage(nbytes, n * h * w * 9, device)
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
    return ResidentData(features, base, target, mask, nhwc, int(parity))


def epoch_batches(
    train_idx: torch.Tensor, batch: int, dist_info: DistInfo, seed: int, epoch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's cutout indices and augmentation codes (0-7) for one epoch, each of shape
    (steps, batch / world): every global batch is drawn from the seeded (seed, epoch)
    permutation of ``train_idx`` (the last incomplete batch is dropped) and split into
    ``world`` consecutive, disjoint slices, one per rank."""
    world, local = dist_info.world, batch // dist_info.world
    steps = len(train_idx) // batch
    g = torch.Generator().manual_seed(derived_seed(seed, epoch, 1))
    order = torch.randperm(len(train_idx), generator=g)[: steps * batch]
    idx = train_idx[order].view(steps, world, local)
    aug = torch.randint(0, 8, (steps, world, local), generator=g)
    r = dist_info.rank
    return idx[:, r].contiguous(), aug[:, r].contiguous()
