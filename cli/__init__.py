"""The ``splat-portrait`` command line (installed as ``splat_portrait.cli``)."""
