"""MineLightning: the LightningModule that trains a policy offline on episode-continuous batches."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn

from minetrain.errors import CheckpointError, ConfigError, TrainingError
from minetrain.models.checkpoint import check_fits
from minetrain.models.inputs import check_interaction_ids, frame_size_of
from minetrain.offline.checkpoint_io import install_checkpoint_io
from minetrain.offline.memory import SlotMemory
from minetrain.offline.mine_callbacks import ObjectiveCallback
from minetrain.offline.mine_callbacks.objective import (
    LAYOUTS,
    native_batch,
    reference_batch,
    reference_latents,
)
from minetrain.offline.optim import build_scheduler, check_optim_settings, param_groups
from minetrain.offline.seeding import default_seed, step_seed
from minetrain.offline.utils import convert_to_normal

log = logging.getLogger(__name__)

# Key of MineLightning's own state in a Lightning checkpoint.
STATE_KEY = "minetrain"
STAGES = ("train", "val")
STAGE_NAMES = {"train": "training", "val": "validation"}


def _objective_names(objectives: Sequence[ObjectiveCallback]) -> list[str]:
    names: list[str] = []
    for objective in objectives:
        name = objective.name
        names.append(name if name not in names else f"{name}{len(names)}")
    return names


def _plain_attributes(obj: object) -> dict[str, Any]:
    """The scalar settings of an objective, for the hyperparameters."""
    return {
        k: v
        for k, v in vars(obj).items()
        if not k.startswith("_") and isinstance(v, int | float | str | bool)
    }


class MineLightning(L.LightningModule):
    """Offline training of ``mine_policy`` on the summed losses of objective callbacks.

    - AdamW with weight decay on every parameter (as the reference; ``weight_decay_matrices_only=True``
      decays weight matrices only, see ``minetrain.offline.optim``; ``fused_adamw=True`` runs torch's
      fused AdamW kernel, one pass per parameter instead of one per operation: the same update up to
      float rounding, about 4x faster on CPU for 16M parameters), linear warmup over
      ``warmup_steps`` (step 0 at ``1 / warmup_steps`` of the rate) then a constant rate, or a cosine
      decay with ``lr_schedule="cosine"``.
    - The policy's recurrent memory is carried per batch slot from batch to batch and detached in
      between (truncated BPTT); a slot restarts from empty memory when its episode changes or its
      window does not continue the previous one. Training and validation keep separate memory;
      validation memory starts empty at each validation run. The training memory, the run seed and
      each slot's position are saved in full checkpoints, so a resumed run continues exactly.
    - Dropout draws come from a per-step seed (see ``minetrain.offline.seeding.step_seed``).
    - Training metrics are averaged over ranks and written to the loggers every ``log_freq``
      steps; validation metrics are epoch means.
    - A non-finite loss stops training with a ``TrainingError`` naming the step and the batch.
    - Windows the loader replaced because of bad data (``on_error='skip'``) are counted over ranks
      and reported, with their episodes, after each epoch and validation run and at the end of fit.
    """

    def __init__(
        self,
        mine_policy: nn.Module,
        callbacks: Sequence[ObjectiveCallback] = (),
        hyperparameters: Mapping[str, Any] | None = None,
        *,
        log_freq: int = 20,
        learning_rate: float = 1e-5,
        warmup_steps: int = 1000,
        weight_decay: float = 0.01,
        lr_schedule: str = "constant",
        min_lr_ratio: float = 0.0,
        seed: int | None = None,
        weight_decay_matrices_only: bool = False,
        fused_adamw: bool = False,
    ) -> None:
        super().__init__()
        objectives = list(callbacks)
        if not objectives:
            raise ConfigError(
                "MineLightning has no objectives; pass callbacks=[BehaviorCloneCallback(weight=1.0)] "
                "or another ObjectiveCallback"
            )
        for objective in objectives:
            if not isinstance(objective, ObjectiveCallback):
                raise ConfigError(
                    f"MineLightning callbacks must be ObjectiveCallback objectives, got "
                    f"{type(objective).__name__}; Lightning callbacks (EMA, checkpoints) go to "
                    "L.Trainer(callbacks=...)"
                )
            if objective.layout not in LAYOUTS:
                raise ConfigError(
                    f"objective {type(objective).__name__} has layout={objective.layout!r}; expected one of "
                    f"{', '.join(LAYOUTS)}"
                )
        if not isinstance(log_freq, int) or log_freq < 1:
            raise ConfigError(f"MineLightning log_freq={log_freq!r}; expected an integer >= 1")
        check_optim_settings(learning_rate, weight_decay, warmup_steps, lr_schedule, min_lr_ratio)
        self.mine_policy = mine_policy
        self.objectives = objectives
        self.objective_names = _objective_names(objectives)
        self.log_freq = log_freq
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.min_lr_ratio = min_lr_ratio
        self.weight_decay_matrices_only = bool(weight_decay_matrices_only)
        if not isinstance(fused_adamw, bool):
            raise ConfigError(f"MineLightning fused_adamw={fused_adamw!r}; expected true or false")
        self.fused_adamw = fused_adamw
        self.seed = default_seed() if seed is None else int(seed)
        self.slot_memory = {stage: SlotMemory() for stage in STAGES}
        # Episodes of the windows this rank skipped for bad data in the current epoch; counts over the fit.
        self._skipped_now: dict[str, list[str]] = {stage: [] for stage in STAGES}
        self._skipped_in_fit: dict[str, int] = dict.fromkeys(STAGES, 0)
        optim = {
            "learning_rate": learning_rate,
            "weight_decay": weight_decay,
            "warmup_steps": warmup_steps,
            "lr_schedule": lr_schedule,
            "min_lr_ratio": min_lr_ratio,
            "weight_decay_matrices_only": self.weight_decay_matrices_only,
            "fused_adamw": fused_adamw,
            "log_freq": log_freq,
            "objectives": {
                name: {"class": type(obj).__name__, **_plain_attributes(obj)}
                for name, obj in zip(self.objective_names, objectives, strict=True)
            },
        }
        if isinstance(getattr(mine_policy, "policy_name", None), str):
            # What minetrain.models.load_policy rebuilds the policy from.
            optim["policy"] = {"name": mine_policy.policy_name, "config": dict(mine_policy.config)}
        self.save_hyperparameters({**convert_to_normal(dict(hyperparameters or {})), "mine_lightning": optim})

    # ----------------------------------------------------------------------------------- steps
    def _check_window(self, batch: Mapping[str, Any]) -> None:
        timesteps = getattr(self.mine_policy, "config", {}).get("timesteps")
        length = batch["image"].shape[1]
        if timesteps is not None and length != timesteps:
            raise ConfigError(
                f"batches hold windows of {length} frames but the policy was built with "
                f"timesteps={timesteps}; set data_params win_len equal to the policy's timesteps"
            )

    def _batch_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> dict[str, torch.Tensor]:
        self._check_window(batch)
        slots = self.slot_memory[stage]
        batch, memory = slots.prepare(batch)
        for objective in self.objectives:
            if objective.layout == "reference":
                batch = native_batch(objective.before_step(reference_batch(batch), batch_idx, stage))
            else:
                batch = objective.before_step(batch, batch_idx, stage)
        latents, memory_out = self.mine_policy(batch, memory)
        slots.update(batch, memory_out)
        views = {"native": (batch, latents)}
        if any(objective.layout == "reference" for objective in self.objectives):
            views["reference"] = (reference_batch(batch), reference_latents(latents))
        metrics: dict[str, torch.Tensor] = {}
        summed: dict[str, torch.Tensor] = {}
        total = None
        for name, objective in zip(self.objective_names, self.objectives, strict=True):
            seen_batch, seen_latents = views[objective.layout]
            result = objective(seen_batch, batch_idx, stage, seen_latents, self.mine_policy)
            if "loss" not in result:
                raise ConfigError(
                    f"objective {type(objective).__name__} returned no 'loss' (keys: {sorted(result)})"
                )
            total = result["loss"] if total is None else total + result["loss"]
            for key, value in result.items():
                # Plain numbers too (the reference's objectives return their weight as a float), made on
                # the device rather than copied there, which would wait for it.
                if not isinstance(value, torch.Tensor):
                    value = torch.full((), value, device=self.device)
                value = value.to(self.device).detach()
                metrics[f"{name}/{key}"] = value
                summed[key] = value if key not in summed else summed[key] + value
        # The reference's names: each key summed over the objectives.
        metrics.update(summed)
        metrics["loss"] = total.detach()
        return {"loss": total, "metrics": metrics}

    def _check_finite(self, loss: torch.Tensor, batch: Mapping[str, Any], batch_idx: int) -> None:
        finite = bool(torch.isfinite(loss))
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        where = (
            f"at global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx}, "
            f"episodes {list(batch['episode'])}, frames from {batch['timestamp'][:, 0].tolist()})"
        )
        what = (
            f"loss is {float(loss)} on rank {self.global_rank}"
            if not finite
            else "loss is not finite on another rank"
        )
        raise TrainingError(
            f"{what} {where}; lower the learning rate or check these episodes, then resume from the "
            "last checkpoint"
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(step_seed(self.seed, "train", self.global_step, batch_idx, self.global_rank))
            out = self._batch_step(batch, batch_idx, "train")
        self._check_finite(out["loss"], batch, batch_idx)
        self.log(
            "loss", out["metrics"]["loss"], prog_bar=True, logger=False, batch_size=batch["image"].shape[0]
        )
        if self.global_step % self.log_freq == 0:
            self._log_train_metrics(out["metrics"])
        self._log_skipped_windows(batch, "train")
        return out

    def _log_skipped_windows(self, batch: Mapping[str, Any], stage: str) -> None:
        """Windows the loader replaced because of bad data (all padding), summed over the epoch and ranks."""
        skipped = (batch["mask"].sum(dim=1) == 0).sum().float()
        self.log(
            f"{stage}/skipped_windows",
            skipped,
            on_step=False,
            on_epoch=True,
            reduce_fx="sum",
            sync_dist=True,
            batch_size=batch["image"].shape[0],
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Check the interaction types, read the frame size of I420 batches, and note the episodes of
        windows the loader skipped for bad data (all padding), on the host copy of the batch, where
        reading values does not wait for the device."""
        segment = batch.get("segment", batch.get("segmentation")) if isinstance(batch, Mapping) else None
        if isinstance(segment, Mapping) and isinstance(segment.get("obj_id"), torch.Tensor):
            check_interaction_ids(segment["obj_id"])
        if isinstance(batch, Mapping) and isinstance(batch.get("frame_size"), torch.Tensor):
            # I420 batches: the frame size as a host tuple, which the device copy keeps as is.
            batch["frame_size"] = frame_size_of(batch["frame_size"])
        trainer = self.trainer
        if (trainer.training or trainer.validating) and isinstance(batch, Mapping) and "episode" in batch:
            empty = np.flatnonzero(~batch["mask"].cpu().numpy().any(axis=1))
            self._skipped_now["train" if trainer.training else "val"].extend(
                batch["episode"][i] for i in empty
            )
        return batch

    def _rank_prefix(self) -> str:
        return f"rank {self.global_rank}: " if self.trainer.world_size > 1 else ""

    def _report_skipped_windows(self, stage: str) -> None:
        """Say how many windows of the epoch this rank's loader skipped because of bad data, and where.

        The loader cannot say it: Lightning stops iterating a sized loader after its last batch, before
        the loader's own end-of-pass code runs. Each rank reports its own windows: a collective here
        would meet another rank's lazily computed epoch metrics (rank 0's progress bar computes them
        earlier in the hook order than the other ranks do) and hang.
        """
        episodes, self._skipped_now[stage] = self._skipped_now[stage], []
        self._skipped_in_fit[stage] += len(episodes)
        if episodes:
            counts = ", ".join(f"{name} ({n})" for name, n in sorted(Counter(episodes).items()))
            log.warning(
                "%sepoch %d: %d %s window(s) skipped because of bad data (on_error='skip'), in episodes "
                "%s; the 'skipping window' warnings name their chunks",
                self._rank_prefix(),
                self.current_epoch,
                len(episodes),
                STAGE_NAMES[stage],
                counts,
            )

    def on_train_epoch_end(self) -> None:
        self._report_skipped_windows("train")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._report_skipped_windows("val")

    def on_fit_start(self) -> None:
        self._skipped_in_fit = dict.fromkeys(STAGES, 0)

    def on_fit_end(self) -> None:
        if any(self._skipped_in_fit.values()):
            log.warning(
                "%sthis run skipped %d training and %d validation window(s) because of bad data "
                "(on_error='skip'); see the per-epoch counts above",
                self._rank_prefix(),
                self._skipped_in_fit["train"],
                self._skipped_in_fit["val"],
            )

    def _log_train_metrics(self, metrics: Mapping[str, torch.Tensor]) -> None:
        names = list(metrics)
        values = torch.stack([metrics[name].float() for name in names])
        values = self.trainer.strategy.reduce(values, reduce_op="mean")
        if self.global_rank == 0:
            row = {f"train/{name}": float(value) for name, value in zip(names, values.tolist(), strict=True)}
            for logger in self.loggers:
                logger.log_metrics(row, step=self.global_step)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        out = self._batch_step(batch, batch_idx, "val")
        self.log_dict(
            {f"val/{name}": value for name, value in out["metrics"].items()},
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=batch["image"].shape[0],
        )
        self._log_skipped_windows(batch, "val")
        return out

    def on_validation_epoch_start(self) -> None:
        self.slot_memory["val"] = SlotMemory()

    # ------------------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(
            param_groups(self.mine_policy, self.weight_decay, self.weight_decay_matrices_only),
            lr=self.learning_rate,
            fused=self.fused_adamw or None,
        )
        total = self.trainer.estimated_stepping_batches if self.lr_schedule == "cosine" else 0
        scheduler = build_scheduler(
            optimizer,
            warmup_steps=self.warmup_steps,
            schedule=self.lr_schedule,
            total_steps=total,
            min_ratio=self.min_lr_ratio,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------------------- checkpoints
    def setup(self, stage: str) -> None:
        install_checkpoint_io(self.trainer)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "optimizer_states" not in checkpoint:
            return  # a weights-only file: no training state
        state = {"seed": self.seed, "train_memory": self.slot_memory["train"].state_dict()}
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        per_rank: list[Any] = [state]
        if world > 1:
            # Every rank carries the memory of its own episodes; rank 0 writes them all.
            per_rank = [None] * world
            dist.all_gather_object(per_rank, state)
        checkpoint[STATE_KEY] = {"world_size": world, "ranks": per_rank}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        path = self.trainer.ckpt_path if self._trainer is not None else None
        remedy = "resume with a checkpoint of the same policy configuration"
        check_fits(self, checkpoint["state_dict"], f"checkpoint {path}", remedy)
        if "optimizer_states" not in checkpoint:
            raise CheckpointError(
                f"checkpoint {path} holds weights only; resume from a full checkpoint "
                "(save_weights_only=False), or load these weights into the policy and start a new run"
            )
        groups = len(checkpoint["optimizer_states"][0].get("param_groups", ()))
        if groups != (2 if self.weight_decay_matrices_only else 1):
            was = groups == 2
            raise CheckpointError(
                f"checkpoint {path} was trained with weight_decay_matrices_only={was}; resume with the same "
                f"setting (optim.weight_decay_matrices_only={str(was).lower()})"
            )
        # The kernel is this run's choice, not the checkpoint's: torch would restore the saved groups'
        # flag with the state (same state either way).
        for group in checkpoint["optimizer_states"][0]["param_groups"]:
            group["fused"] = self.fused_adamw or None
        saved = checkpoint.get(STATE_KEY)
        if saved is None:
            rank_zero_warn(f"checkpoint {path} has no recurrent memory state; training memory starts empty")
            return
        if saved["world_size"] != self.trainer.world_size:
            rank_zero_warn(
                f"checkpoint {path} was written by {saved['world_size']} processes, this run has "
                f"{self.trainer.world_size}; training memory starts empty"
            )
            self.seed = saved["ranks"][0]["seed"]
            return
        state = saved["ranks"][self.global_rank]
        self.seed = state["seed"]
        self.slot_memory["train"].load_state_dict(state["train_memory"])
