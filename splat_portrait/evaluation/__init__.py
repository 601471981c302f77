"""``splat-portrait evaluate``: the paper's evaluation protocols (Sec. 4) on a preprocessed test split.

Module map: ``protocol`` (which clips, which source image, how many frames), ``methods`` (what
generates the frames: a checkpoint or the copy-source baseline), ``scoring`` (per-clip and
aggregate metrics), ``sheet`` (PNG contact sheets), ``report`` (metrics.json, metrics.csv and the
table with the paper's figures), ``run`` (the whole evaluation).
"""

from splat_portrait.evaluation.protocol import PROTOCOLS
from splat_portrait.evaluation.run import EvaluateOptions, EvaluationResult, evaluate

__all__ = ["PROTOCOLS", "EvaluateOptions", "EvaluationResult", "evaluate"]
