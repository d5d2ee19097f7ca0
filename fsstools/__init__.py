"""fsstools: few-shot semantic segmentation with transductive inference (RePRI)."""

__version__ = "0.1.0"
