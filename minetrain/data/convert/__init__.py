"""Converters into the trajectory store: OpenAI VPT recordings and interaction annotations."""

from minetrain.data.convert.report import ConversionReport

__all__ = ["ConversionReport"]
