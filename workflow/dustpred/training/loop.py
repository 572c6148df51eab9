"""The U-Net training loop: :class:`Trainer` runs the epochs of one process (one rank).

Recipe (paper section 2.3; every number from the ``unet`` config section, typed as
:class:`~dustpred.models.settings.UNetSettings`): Adam, learning rate ``lr`` times
``lr_decay_factor`` every ``lr_decay_every`` epochs, batch ``batch_size``, the loss of
:mod:`dustpred.training.losses`, gradient-norm clipping at ``grad_clip`` (0: off), with
``adam_reset`` fresh Adam moments every epoch (the authors'). The weights with the lowest
validation loss are kept besides the last ones (``keep`` chooses). Augmentation (``augment``):
each training sample gets one of the 8 rotations/flips of the square (seeded).

Randomness: at the start of every epoch the data order, the augmentations and the dropout
generator are re-seeded from ``(seed, epoch[, rank])``. An epoch therefore depends only on the
seed, the epoch and the state it starts from, and a resumed run (:meth:`Trainer.state`,
:meth:`Trainer.load_state`) continues exactly as the uninterrupted one would (bitwise on CPU).

On CUDA: bf16 autocast (``precision``), channels_last, fused Adam, and the whole training step
(gather, augmentation, forward, loss, backward, clipping, optimizer step) captured in one CUDA graph
and replayed; optional ``torch.compile``. A non-finite loss stops training with an error
naming epoch and batch (checked every step on CPU, once per epoch on CUDA so that steps never
wait for the host).

Several processes: BatchNorm statistics are synchronised across ranks (``sync_batchnorm``),
gradients are averaged by DistributedDataParallel, metrics are summed over ranks. Under DDP
the training step runs eagerly unless ``cuda_graphs: true`` (graph capture of NCCL all-reduces
is supported by PyTorch but has not been run on several GPUs here). Files are written by
:mod:`dustpred.training.job`, never here.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dustpred.errors import ConfigError, InputError
from dustpred.models.checkpoint import TrainResult
from dustpred.models.settings import UNetSettings
from dustpred.models.unet import UNet
from dustpred.training.distributed import DistInfo, all_reduce_to_cpu, convert_generic_sync_bn
from dustpred.training.losses import PaperLoss
from dustpred.training.resident import ResidentData, derived_seed, epoch_batches

log = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "train_l1",
    "train_corr",
    "val_loss",
    "val_l1",
    "val_corr",
    "train_r50",
    "train_r150",
    "val_r50",
    "val_r150",
    "samples_per_s",
    "seconds",
]
# The loss and its two terms (l1 = mean |T - P|, corr = lambda [(1 - r50) + (1 - r150)], see
# dustpred.training.losses.PaperLoss.terms) are means over the epoch's samples; loss = l1 + corr.
LOSS_TERMS = ("loss", "l1", "corr", "r50", "r150")
GRAPH_WARMUP_STEPS = 3  # eager steps before capturing the training step (11 under DDP)


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; the message names the epoch and batch."""


def reset_adam(opt: torch.optim.Adam) -> None:
    """Zero Adam's moments and step counts in place: the next update is that of a new Adam
    (the authors re-create it every epoch), while the tensors a captured CUDA graph holds
    stay where they are."""
    for state in opt.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                value.zero_()


class Trainer:
    """Train ``model`` on ``data`` (see module docstring); :meth:`fit` runs the epochs.

    Parameters
    ----------
    model : UNet
    data : ResidentData
    train_idx, val_idx : ndarray
        Cutout indices of ``data`` to train and validate on.
    settings : UNetSettings
        The ``unet`` config section.
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
        settings: UNetSettings,
        *,
        seed: int,
        device: torch.device,
        side_deg: float,
        dist_info: DistInfo | None = None,
    ) -> None:
        self.settings = settings
        self.seed = int(seed)
        self.device = device
        self.dist = dist_info or DistInfo()
        self.cuda = device.type == "cuda"
        self.data = data
        self.net = model.to(device)
        if self.cuda:
            self.net = self.net.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self._set_batches(train_idx, val_idx)
        self._wrap_model()
        self.loss_fn = PaperLoss(data.npix, side_deg, lam=settings.loss_lambda).to(device)
        self.params = [q for q in self.net.parameters() if q.requires_grad]
        graphs = settings.cuda_graphs
        self.use_graphs = (
            self.cuda
            and data.features.device.type == "cuda"
            and (graphs == "true" or (graphs == "auto" and not self.dist.active))
        )
        self.opt = self._optimizer()
        # Sums over the epoch's samples of LOSS_TERMS.
        self.acc = torch.zeros(
            len(LOSS_TERMS), dtype=torch.float64 if not self.cuda else torch.float32, device=device
        )
        self.graph = None
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
            if self.cuda and settings.precision == "bf16"
            else torch.autocast(device.type, enabled=False)
        )

    # -- set-up
    def _set_batches(self, train_idx: np.ndarray, val_idx: np.ndarray) -> None:
        """Batch sizes, index tensors and steps per epoch; errors if no batch fits."""
        self.batch = self.settings.batch_size
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

    def _wrap_model(self) -> None:
        """``self.net`` with synchronised BatchNorm (several processes), ``self.model`` its
        DDP wrapper (or itself), ``self.train_model`` that compiled (or itself)."""
        if self.dist.active and self.settings.sync_batchnorm:
            if self.cuda:
                self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
            else:
                self.net = convert_generic_sync_bn(self.net)
        self.model: nn.Module = self.net
        if self.dist.active:
            with warnings.catch_warnings():
                # torch 2.13 renames broadcast_buffers; 2.11 (the GPU machines) knows only it.
                warnings.simplefilter("ignore", FutureWarning)
                self.model = nn.parallel.DistributedDataParallel(
                    self.net,
                    device_ids=[self.device.index] if self.cuda else None,
                    broadcast_buffers=False,
                    gradient_as_bucket_view=True,
                )
        compile_mode = self.settings.compile
        if compile_mode:
            mode = compile_mode if isinstance(compile_mode, str) else None
            self.train_model = torch.compile(self.model, mode=mode)
        else:
            self.train_model = self.model

    def _optimizer(self) -> torch.optim.Adam:
        if self.cuda:
            # A tensor learning rate lets a captured optimizer step see schedule changes.
            lr = torch.tensor(self.settings.lr, device=self.device)
            return torch.optim.Adam(self.params, lr=lr, fused=True, capturable=True)
        return torch.optim.Adam(self.params, lr=self.settings.lr)

    # -- schedule
    def lr_at(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``: step decay."""
        s = self.settings
        return s.lr * s.lr_decay_factor ** (epoch // s.lr_decay_every)

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
        l1, corr, r = self.loss_fn.terms(pred, t, m)
        loss = corr + l1
        loss.backward()
        if self.settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.settings.grad_clip, foreach=self.cuda)
        self.opt.step()
        b = t.shape[0]
        terms = [loss.detach(), l1.detach(), corr.detach()]
        stat = torch.stack([v * b for v in terms] + [r[:, 0].sum(), r[:, 1].sum()])
        self.acc.add_(stat.to(self.acc.dtype))
        return loss.detach()

    def _step(self, idx: torch.Tensor, aug: torch.Tensor | None, epoch: int, s: int):
        """Training step ``s`` (0-based) of ``epoch``: through the CUDA graph if in use, else
        eagerly (on CPU, a non-finite loss stops training at once)."""
        if self.use_graphs:
            return self._graph_step(idx, aug)
        self.opt.zero_grad(set_to_none=True)
        loss = self._step_body(idx, aug)
        if not self.cuda and not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"non-finite training loss ({loss.item()}) at epoch {epoch + 1}, "
                f"batch {s + 1} of {self.steps}"
            )
        return loss

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

    # -- one epoch
    def _epoch_batches(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx, aug = epoch_batches(self.train_idx, self.batch, self.dist, self.seed, epoch)
        dev = self.data.features.device
        return idx.to(dev), (aug.to(dev) if self.settings.augment else None)

    def _train_epoch(self, epoch: int, total_epochs: int) -> dict:
        torch.manual_seed(derived_seed(self.seed, epoch, 2, self.dist.rank))
        self._set_lr(self.lr_at(epoch))
        if self.settings.adam_reset:
            reset_adam(self.opt)
        self.net.train()
        idx, aug = self._epoch_batches(epoch)
        self.acc.zero_()
        losses = torch.empty(self.steps, device=self.device)
        log_every = max(1, self.steps // 4)
        if self.cuda:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        for s in range(self.steps):
            losses[s] = self._step(idx[s], aug[s] if aug is not None else None, epoch, s)
            if (s + 1) % log_every == 0 and s + 1 < self.steps and self.dist.is_main:
                self._log_progress(epoch, total_epochs, s + 1, t0)
        if self.cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        self._check_finite(losses, epoch)
        acc = self._reduce(self.acc.double().cpu())
        n = self.steps * self.batch
        row = {f"train_{k}": v / n for k, v in zip(LOSS_TERMS, acc.tolist(), strict=True)}
        return {**row, "samples_per_s": n / seconds, "train_seconds": seconds}

    def _log_progress(self, epoch: int, total_epochs: int, done: int, t0: float) -> None:
        """Log this rank's running means after ``done`` steps of ``epoch`` (started at t0)."""
        n = done * self.local_batch
        loss, l1, corr, r50, r150 = (v / n for v in self.acc.tolist())
        log.info(
            "epoch %d/%d batch %d/%d: loss %.4f (L1 %.4f + corr %.4f) r50 %.4f r150 %.4f "
            "(%.0f samples/s)",
            epoch + 1,
            total_epochs,
            done,
            self.steps,
            loss,
            l1,
            corr,
            r50,
            r150,
            done * self.batch / (time.perf_counter() - t0),
        )

    def _check_finite(self, losses: torch.Tensor, epoch: int) -> None:
        """Raise :class:`TrainingDivergedError` naming the first non-finite step of any rank."""
        bad = torch.nonzero(~torch.isfinite(losses)).flatten()
        bad = self._reduce(
            torch.tensor([int(bad[0]) if len(bad) else -1], dtype=torch.float64), op="max"
        )
        if bad[0] >= 0:
            raise TrainingDivergedError(
                f"non-finite training loss at epoch {epoch + 1}, batch {int(bad[0]) + 1} of "
                f"{self.steps}"
            )

    def _reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        return all_reduce_to_cpu(t, self.dist, self.device, op)

    @torch.no_grad()
    def validate(self) -> dict:
        """:data:`LOSS_TERMS` averaged over the validation cutouts (all ranks' shares), as
        ``val_loss``, ``val_l1``, ...; NaN without validation cutouts."""
        local = self.val_idx[self.dist.rank :: self.dist.world].to(self.data.features.device)
        sums = torch.zeros(len(LOSS_TERMS) + 1, dtype=torch.float64)  # and the sample count
        self.net.eval()
        eval_batch = 4 * self.local_batch
        for lo in range(0, len(local), eval_batch):
            x, t, m = self.data.batch(local[lo : lo + eval_batch])
            x, t, m = x.to(self.device), t.to(self.device), m.to(self.device)
            with self.autocast:
                pred = self.net(x)
            l1, corr, r = self.loss_fn.terms(pred, t, m)
            b = t.shape[0]
            terms = [(corr + l1).item(), l1.item(), corr.item()]
            sums += torch.tensor(
                [v * b for v in terms] + [r[:, 0].sum().item(), r[:, 1].sum().item(), b],
                dtype=torch.float64,
            )
        self.net.train()
        sums = self._reduce(sums).tolist()
        n = sums[-1]
        means = (v / n if n else math.nan for v in sums[:-1])
        return {f"val_{k}": v for k, v in zip(LOSS_TERMS, means, strict=True)}

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

    # -- epochs
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
            self._keep_best(result, epoch, row)
            if self.dist.is_main:
                self._log_epoch(epoch, epochs, row, train_seconds, result.best_epoch == epoch + 1)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, result)
        return result

    def _keep_best(self, result: TrainResult, epoch: int, row: dict) -> None:
        """Keep the weights of (0-based) ``epoch`` in ``result`` if its validation loss (the
        training loss without a validation set) is the lowest so far."""
        val = row["val_loss"]
        score = val if math.isfinite(val) else row["train_loss"]
        if score < result.best_val_loss or result.best_state is None:
            result.best_val_loss = score
            result.best_epoch = epoch + 1
            result.best_state = {
                k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()
            }

    @staticmethod
    def _log_epoch(epoch: int, epochs: int, row: dict, train_seconds: float, best: bool) -> None:
        log.info(
            "epoch %d/%d: lr %.2g train loss %.4f (L1 %.4g + corr %.4g) r50 %.4f r150 %.4f | "
            "val loss %.4f (L1 %.4g + corr %.4g) r50 %.4f r150 %.4f | %.0f samples/s, %.1f s "
            "(train %.1f s)%s",
            epoch + 1,
            epochs,
            row["lr"],
            *(row[f"train_{k}"] for k in LOSS_TERMS),
            *(row[f"val_{k}"] for k in LOSS_TERMS),
            row["samples_per_s"],
            row["seconds"],
            train_seconds,
            " *best*" if best else "",
        )
