#!/usr/bin/env bash
# Recreates examples/speech.wav, the bundled demo's speech: espeak-ng's default English voice,
# resampled to 16 kHz mono PCM16 with the ffmpeg that imageio-ffmpeg ships.
set -euo pipefail
cd "$(dirname "$0")"
command -v espeak-ng >/dev/null || { echo "make_speech.sh needs espeak-ng (e.g. apt install espeak-ng)" >&2; exit 1; }
FFMPEG=$(../.venv/bin/python -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())")
espeak-ng -v en-us -s 150 -w /tmp/splat-portrait-speech.wav \
  "Hello! I am a talking head made of Gaussian splats, rendered from a single photo."
"$FFMPEG" -y -loglevel error -i /tmp/splat-portrait-speech.wav -ac 1 -ar 16000 -c:a pcm_s16le speech.wav
rm /tmp/splat-portrait-speech.wav
