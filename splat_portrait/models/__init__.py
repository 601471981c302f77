"""The networks: static generator, audio encoder, dynamic decoder, and their checkpoints.

Module map: ``config`` (dataclass configs, presets), ``unet`` (SongUNet blocks, FiLM, embeddings),
``generator`` (portrait -> per-pixel Gaussians + background, ``to_splats``), ``audio`` (AudioNet,
AudioAttNet, time-delta embedding), ``dynamic`` (audio-driven per-pixel offsets), ``talking_head``
(the model of both stages), ``checkpoint`` (save/load).

Parameter counts of the presets (``tests/test_models.py`` recomputes this table; the audio encoder is
part of the dynamic decoder; fp32 size is 4 bytes per parameter):

| preset | image | generator | dynamic decoder | of which audio | total | fp32 |
| --- | --- | --- | --- | --- | --- | --- |
| tiny | 64² | 355,042 | 47,272 | 13,573 | 402,314 | 1.6 MB |
| small | 128² | 3,796,274 | 269,528 | 41,381 | 4,065,802 | 16.3 MB |
| paper | 256² | 87,593,746 | 1,835,304 | 132,005 | 89,429,050 | 357.7 MB |

``tiny`` and ``small`` read 80-d log-mel features, ``paper`` 1024-d wav2vec2-XLSR features (the
first AudioNet convolution is the only part that depends on that width).
"""

from splat_portrait.models.checkpoint import load_checkpoint, load_model, save_checkpoint
from splat_portrait.models.config import PRESETS, ModelConfig, preset
from splat_portrait.models.generator import GaussianMaps, StaticGenerator, to_splats
from splat_portrait.models.talking_head import Encoded, TalkingHead

__all__ = [
    "PRESETS",
    "Encoded",
    "GaussianMaps",
    "ModelConfig",
    "StaticGenerator",
    "TalkingHead",
    "load_checkpoint",
    "load_model",
    "preset",
    "save_checkpoint",
    "to_splats",
]
