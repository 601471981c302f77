"""Procedural talking heads with ground truth, written in the preprocessed clip layout.

Each clip is a head made of a few ellipsoids (cranium, jaw, nose, neck, ears) with a solid
procedural skin texture, hair, eyes that blink and a mouth whose opening follows the loudness of
the clip's own audio, in front of a textured background plane. The camera wanders like a talking
person's head (a few degrees of yaw, pitch and roll plus small shifts). An analytic ray caster in
torch renders every frame at once, so a 5 s clip at 128^2 takes seconds on a CPU.

Ground truth for each frame: the z-depth of the head (0 where the background shows) and the mouth
opening in [0, 1]. Every clip is a pure function of its seed: different seeds give different
identities (shape, skin, hair, eyes, background, voice).

Three modules: ``speech`` (the clip's sound and the mouth opening it drives), ``head`` (identities,
motion and the ray caster) and ``dataset`` (settings, one clip with its ground truth, datasets on disk).
"""

from splat_portrait.data.synthetic.dataset import (
    GroundTruth,
    SynthConfig,
    SyntheticClip,
    clip_id,
    clip_seed,
    read_ground_truth,
    synthesize_clip,
    write_synthetic_dataset,
)
from splat_portrait.data.synthetic.head import HeadIdentity, random_identity, render_head
from splat_portrait.data.synthetic.speech import SPEECH_KINDS, mouth_opening

__all__ = [
    "GroundTruth", "HeadIdentity", "SPEECH_KINDS", "SynthConfig", "SyntheticClip", "clip_id", "clip_seed",
    "mouth_opening", "random_identity", "read_ground_truth", "render_head", "synthesize_clip", "write_synthetic_dataset",
]  # fmt: skip
