"""Helpers shared by steps: file I/O, images, metrics, CAM files, training loop."""
