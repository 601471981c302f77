"""Speech input: decoding to 16 kHz mono, 50 Hz feature extractors, and per-frame windows."""
