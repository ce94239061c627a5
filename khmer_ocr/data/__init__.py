"""Synthetic Khmer text-line data: text sources, fonts, rendering, augmentation, datasets, validation."""
