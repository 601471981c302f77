"""ONNX export of the generator and the audio-conditioned decoder (installed as ``splat_portrait.export``).

``graphs.export_model(checkpoint, out_dir)`` writes MODEL_DIR; the runtime reads it
(``splat_portrait.runtime.model_dir``).
"""
