"""The training loop of both stages: setup, resume, steps, checkpoints and logs.

``train(config, run_dir)`` runs stage I (``config.stage == "static"``) or stage II (``"dynamic"``)
and writes, on rank 0 only:

* ``RUN_DIR/static.ckpt`` / ``dynamic.ckpt``: the model (loadable with
  :func:`~splat_portrait.models.checkpoint.load_model`) and how it was trained (config, step,
  audio feature spec);
* ``RUN_DIR/last.ckpt``: the same plus everything ``resume=True`` needs (optimizer, LR schedule,
  step, global RNG states); both every ``checkpoint_every`` steps and at the end, atomically;
* ``RUN_DIR/tb``: TensorBoard scalars (losses, learning rate, gradient norm, throughput) and
  preview images.

A run killed at any point and resumed reproduces the uninterrupted run bit for bit on the same
machine and thread count: the samples of step ``s`` and the step's randomness are pure functions
of the seed and ``s``. A non-finite loss or gradient stops the run before the weights change or a
checkpoint is written, so the last checkpoint stays the last good one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from splat_portrait.atomic import writable_dir
from splat_portrait.audio.features import FeatureSpec, check_model_reads
from splat_portrait.data import layout
from splat_portrait.data.datasets import DynamicDataset, StaticPairDataset, make_loader
from splat_portrait.errors import SplatPortraitError
from splat_portrait.models.checkpoint import load_checkpoint, save_checkpoint
from splat_portrait.models.config import preset
from splat_portrait.models.talking_head import TalkingHead
from splat_portrait.training import distributed, state
from splat_portrait.training.config import TrainConfig, resume_differences
from splat_portrait.training.distributed import Distributed, RankShard
from splat_portrait.training.mouth_code import fit_mouth_predictor
from splat_portrait.training.objective import Objective, build_critics
from splat_portrait.training.previews import preview_images

log = logging.getLogger(__name__)

# on_step(step, total_steps, losses): progress of rank 0 after every step.
StepCallback = Callable[[int, int, dict[str, float]], None]


@dataclass
class TrainResult:
    """How a call to :func:`train` went."""

    step: int  # the run's step count at the end
    steps_run: int  # steps taken by this call (fewer than ``step`` after a resume)
    seconds: float
    losses: dict[str, float]  # the last step's terms, averaged over ranks
    checkpoint: Path

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps_run if self.steps_run else math.nan


def train(
    config: TrainConfig,
    run_dir: str | Path,
    device: str = "cpu",
    resume: bool = False,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Run (or with ``resume``, continue) a training run in ``run_dir``; see the module docstring.

    Under ``torchrun`` every process calls this with the same arguments.
    """
    context = distributed.start(device)
    try:
        if context.is_main:
            writable_dir(run_dir)  # a read-only or full RUN_DIR fails now, not at the first checkpoint
        return Trainer(config, Path(run_dir), context, resume).run(on_step)
    finally:
        distributed.stop(context)


def initial_model(config: TrainConfig, resolution: int, feature_dim: int) -> TalkingHead:
    """The untrained stage-I model of ``config``: its preset at ``resolution`` (and ``config.footprint``), seeded by ``config.seed``."""
    overrides = {} if config.footprint is None else {"footprint": config.footprint}
    try:
        model_config = preset(config.preset, image_size=resolution, feature_dim=feature_dim, **overrides)
    except ValueError as err:
        raise SplatPortraitError(f"cannot build the {config.preset} model at {resolution}^2: {err}") from None
    # Seeded initial weights without touching the caller's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return TalkingHead(model_config)


def with_footprint(model: TalkingHead, footprint: float) -> TalkingHead:
    """The same weights under another surface footprint (it has no parameters of its own)."""
    generator = dataclasses.replace(model.config.generator, footprint=footprint)
    rebuilt = TalkingHead(dataclasses.replace(model.config, generator=generator))
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt


def with_mouth_code(model: TalkingHead, channels: int, seed: int) -> TalkingHead:
    """The same generator under a new dynamic decoder (seeded by ``seed``) with a mouth predictor of
    ``channels`` (0: none); the old decoder's weights do not fit it and are dropped."""
    dynamic = dataclasses.replace(model.config.dynamic, mouth_code_channels=channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rebuilt = TalkingHead(dataclasses.replace(model.config, dynamic=dynamic))
    rebuilt.generator.load_state_dict(model.generator.state_dict())
    return rebuilt


class Trainer:
    """One process's part of a run; build it with :func:`train`."""

    def __init__(self, config: TrainConfig, run_dir: Path, context: Distributed, resume: bool) -> None:
        self.config, self.run_dir, self.context = config, run_dir, context
        self.resume_path = run_dir / state.RESUME_FILE
        self.model_path = state.model_file(run_dir, config.stage)
        saved = self._resume_state(resume)
        # Stage II starts from the stage-I model (stage I may too), unless a resumed run brings its own.
        init = load_checkpoint(config.init) if config.init is not None and saved is None else None
        self.dataset = self._dataset(saved, init)
        self.feature_spec, model = self._model(saved, init)
        self.model = model.to(context.device)
        self.mouth_code_fit = saved.get("mouth_code_fit") if saved is not None else self._fit_mouth_predictor()
        self.params = self._trainable_parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        self.step = 0
        if saved is not None:
            self._restore(saved)
        self.objective: nn.Module = Objective(self.model, build_critics(config, context.device), config)
        if context.enabled:
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            self.objective = DistributedDataParallel(self.objective, device_ids=device_ids)
        self.last_saved: int | None = saved["step"] if saved is not None else None

    # ----------------------------------------------------------------------------------- setup

    def _resume_state(self, resume: bool) -> dict[str, Any] | None:
        if not resume:
            if self.resume_path.exists():
                raise SplatPortraitError(
                    f"{self.run_dir} already holds a run ({self.resume_path}); pass --resume to continue it "
                    "or choose another output directory"
                )
            return None
        if not self.resume_path.exists():
            raise SplatPortraitError(f"nothing to resume: {self.resume_path} does not exist; drop --resume to start a new run")
        model, saved = load_checkpoint(self.resume_path)
        if not isinstance(saved, dict) or "optimizer" not in saved or "config" not in saved:
            raise SplatPortraitError(f"{self.resume_path} holds no training state to resume from; start a new run")
        differences = resume_differences(saved["config"], self.config)
        if saved["world_size"] != self.context.world_size:
            differences.append(f"processes: {saved['world_size']} -> {self.context.world_size}")
        if differences:
            raise SplatPortraitError(
                f"cannot resume {self.resume_path} with different settings ({'; '.join(differences)}); "
                "rerun with the original settings or start a new run in another directory"
            )
        saved["model"] = model
        return saved

    def _dataset(self, saved: dict[str, Any] | None, init: tuple[TalkingHead, Any] | None) -> StaticPairDataset:
        config = self.config
        if saved is not None:
            resolution = saved["model"].config.image_size
        elif init is not None:
            resolution = init[0].config.image_size
            if config.resolution is not None and config.resolution != resolution:
                raise SplatPortraitError(
                    f"--resolution {config.resolution} differs from the {resolution}^2 of the stage-I checkpoint "
                    f"{config.init}; leave it out or train stage I at {config.resolution}"
                )
        else:
            resolution = config.resolution or preset(config.preset).image_size
        kind = DynamicDataset if config.stage == "dynamic" else StaticPairDataset
        return kind(config.data_dir, "train", resolution, seed=config.seed)

    def _data_feature_spec(self) -> FeatureSpec:
        if isinstance(self.dataset, DynamicDataset):
            return self.dataset.feature_spec
        # Stage I reads no audio; its model still takes the data's feature width so stage II can use it.
        return layout.read_meta(self.dataset.clips[0].paths).audio_features

    def _model(self, saved: dict[str, Any] | None, init: tuple[TalkingHead, Any] | None) -> tuple[FeatureSpec, TalkingHead]:
        config, data_spec = self.config, self._data_feature_spec()
        if saved is not None:
            trained_spec, model = FeatureSpec.from_json(saved["feature_spec"]), saved["model"]
        elif init is not None:
            model, meta = init
            if config.footprint is not None and config.footprint != model.config.generator.footprint:
                model = with_footprint(model, config.footprint)
            # A checkpoint written elsewhere may carry no training metadata; then only the width is checked.
            spec_json = meta.get("feature_spec") if isinstance(meta, dict) else None
            trained_spec = FeatureSpec.from_json(spec_json) if spec_json else None
        else:
            model, trained_spec = initial_model(config, self.dataset.resolution, data_spec.dim), data_spec
        if config.stage == "dynamic":
            check_model_reads(trained_spec, model.config.dynamic.audio.feature_dim, data_spec, config.data_dir)
            channels = config.mouth_code_channels
            if saved is None and channels is not None and channels != model.config.dynamic.mouth_code_channels:
                model = with_mouth_code(model, channels, config.seed)
        return trained_spec or data_spec, model

    def _fit_mouth_predictor(self) -> dict[str, Any] | None:
        config, model = self.config, self.model
        if config.stage != "dynamic" or not config.mouth_code_steps:
            return None
        if not model.config.dynamic.mouth_code_channels:
            raise SplatPortraitError("--mouth-code-steps fits a mouth predictor, but this decoder has none; add --mouth-code-channels")
        assert isinstance(self.dataset, DynamicDataset)
        record = fit_mouth_predictor(
            model.dynamic.mouth, self.dataset, config.mouth_code_steps, seed=config.seed, noise=config.mouth_code_noise
        )
        log.info("mouth predictor: %d steps on %d frames of %d clips, loss %.3f", record["steps"], record["frames"], record["clips"], record["final_loss"])
        return record

    def _trainable_parameters(self) -> list[nn.Parameter]:
        model, config = self.model, self.config
        if config.stage == "static":
            # Stage I never runs the dynamic decoder; its zero-initialised output layer stays zero.
            model.dynamic.requires_grad_(False)
        elif config.freeze_static:
            model.generator.requires_grad_(False)
        if config.stage == "dynamic" and model.config.dynamic.mouth_code_channels:
            # Fitted beforehand on every real frame; stage II learns what its codes do to the splats.
            model.dynamic.mouth.requires_grad_(False)
        return [p for p in model.parameters() if p.requires_grad]

    def _restore(self, saved: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.step = saved["step"]
        state.restore_rng(saved["rng"])

    # ------------------------------------------------------------------------------------ run

    def run(self, on_step: StepCallback | None = None) -> TrainResult:
        config, context = self.config, self.context
        first = self.step
        batch_size = config.batch_size
        shard = RankShard(self.dataset, context.rank, context.world_size, batch_size)
        remaining = max(0, config.steps - first)
        loader = make_loader(
            shard, batch_size, config.workers, start=first * batch_size, count=remaining * batch_size,
            pin_memory=context.device.type == "cuda",
        )  # fmt: skip
        writer = self._writer()
        losses: dict[str, float] = {}
        started = logged_at = time.perf_counter()
        logged_step = first
        try:
            self.model.train()
            for batch in loader:
                batch = {k: v.to(context.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
                losses = self._step(batch)
                if writer is not None and (self.step % config.log_every == 0 or self.step == config.steps):
                    now = time.perf_counter()
                    rate = (self.step - logged_step) * batch_size * context.world_size / max(now - logged_at, 1e-9)
                    self._log_scalars(writer, losses, rate)
                    logged_at, logged_step = now, self.step
                if writer is not None and (self.step % config.preview_every == 0 or self.step == config.steps):
                    self._log_previews(writer, batch)
                if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                    self._save(losses)
                if on_step is not None and context.is_main:
                    on_step(self.step, config.steps, losses)
        finally:
            if writer is not None:
                writer.close()
        if remaining == 0:
            log.info("%s is already at step %d of %d; nothing to do", self.resume_path, first, config.steps)
        return TrainResult(self.step, self.step - first, time.perf_counter() - started, losses, self.model_path)

    def _step(self, batch: dict[str, Any]) -> dict[str, float]:
        context, config = self.context, self.config
        number = self.step + 1
        terms = self.objective(batch, state.step_generator(config.seed, self.step, context.rank))
        total = terms["total"]
        self._stop_if_not_finite("loss", total, number, terms)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip or math.inf)
        self._stop_if_not_finite("gradient", norm, number)
        self.optimizer.step()
        self.scheduler.step()
        self.step = number
        values = {name: value.item() for name, value in terms.items()}
        values["grad_norm"] = norm.item()
        return distributed.mean_across_ranks(context, values)

    def _stop_if_not_finite(self, what: str, value: Tensor, number: int, terms: dict[str, Tensor] | None = None) -> None:
        bad = not bool(torch.isfinite(value))
        if not distributed.any_rank(self.context, bad):
            return
        kind = "NaN" if bool(torch.isnan(value)) else "Inf" if bad else "NaN or Inf on another process"
        culprits = [n for n, v in (terms or {}).items() if n != "total" and not bool(torch.isfinite(v))]
        where = f" ({', '.join(culprits)})" if culprits else ""
        if self.last_saved is None:
            kept = f"no checkpoint was written yet (the first is due at step {self.config.checkpoint_every})"
            then = "then start the run again"
        else:
            kept = f"the last good checkpoint is {self.resume_path} (step {self.last_saved})"
            then = "then --resume"
        raise SplatPortraitError(f"{what} became {kind}{where} at step {number}; {kept}; lower --lr or check the data, {then}")

    # ----------------------------------------------------------------------- files (rank 0)

    def _metadata(self, losses: dict[str, float]) -> dict[str, Any]:
        return {
            "stage": self.config.stage,
            "step": self.step,
            "samples": self.step * self.config.batch_size * self.context.world_size,
            "world_size": self.context.world_size,
            "config": self.config.to_dict(),
            "feature_spec": self.feature_spec.to_json(),
            "losses": dict(losses),
            **({"mouth_code_fit": self.mouth_code_fit} if self.mouth_code_fit else {}),
        }

    def _save(self, losses: dict[str, float]) -> None:
        if self.context.is_main:
            metadata = self._metadata(losses)
            resume = {
                **metadata,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": state.capture_rng(),
            }
            # The resume file first: a crash between the two leaves it the newer one, which --resume reads.
            save_checkpoint(self.resume_path, self.model, resume)
            save_checkpoint(self.model_path, self.model, metadata)
            log.debug("step %d: saved %s and %s", self.step, self.resume_path, self.model_path)
        self.last_saved = self.step

    def _writer(self) -> Any:
        if not self.context.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / state.TENSORBOARD_DIR))

    def _log_scalars(self, writer: Any, losses: dict[str, float], samples_per_s: float) -> None:
        for name, value in losses.items():
            writer.add_scalar(f"train/{name}" if name == "grad_norm" else f"loss/{name}", value, self.step)
        writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
        writer.add_scalar("train/samples_per_s", samples_per_s, self.step)

    def _log_previews(self, writer: Any, batch: dict[str, Any]) -> None:
        self.model.eval()
        images = preview_images(self.model, batch, self.config.stage == "dynamic", self.config.render_backend)
        self.model.train()
        for name, image in images.items():
            writer.add_image(f"preview/{name}", image, self.step)
