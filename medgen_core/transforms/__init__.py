"""MONAI-style transforms: array functions/classes and dictionary wrappers."""
