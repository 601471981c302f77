"""The runtime users run: exported ONNX models turned into talking-head videos and .ply files.

Module map: ``model_dir`` (MODEL_DIR and model.json: load, verify hashes, ONNX Runtime sessions),
``engines`` (ONNX Runtime or PyTorch eager behind one interface), ``inputs`` (portrait and speech
loading, face crop and source camera), ``cameras`` (the rendered camera path), ``compose`` (resize,
paste-back, depth colouring), ``outputs`` (all of a job's files committed together), ``pipeline``
(the Animator), ``batch`` (jobs.csv).
"""
