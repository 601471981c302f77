"""Training both stages of the talking head (``splat-portrait train-static`` / ``train-dynamic``).

Module map: ``config`` (:class:`TrainConfig`, stored in every checkpoint), ``objective`` (the
paper's eqs. 1, 2, 5, 6 as loss terms of a batch), ``loop`` (:func:`train`: setup, resume, steps,
checkpoints, TensorBoard), ``distributed`` (``torchrun`` + DDP, data sharding), ``state`` (step
randomness, RNG states, the run's file names), ``previews`` (TensorBoard images).
"""

from splat_portrait.training.config import TrainConfig
from splat_portrait.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
