"""Faces in images: detection and landmarks, the aligned square crop, and head pose from landmarks."""
