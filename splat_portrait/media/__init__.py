"""Media files through ffmpeg: probing, audio decoding to 16 kHz mono, video frames at 25 fps."""
