"""Training data on disk: the preprocessed clip layout and the preprocessing pipeline that writes it."""
