"""Model surgery: classifiers to fully convolutional nets, and pooling <-> strided convolutions.

``convolutionalize(model, input_size=None, pool="window")`` and
``replace_downsampling(model, kind="strided")`` are re-exported as ``fcnkit.convolutionalize``
and ``fcnkit.replace_downsampling``.
"""

from __future__ import annotations

from fcnkit.convert.downsampling import replace_downsampling
from fcnkit.convert.linear_to_conv import ConvolutionalizedNet, convolutionalize

__all__ = ["convolutionalize", "ConvolutionalizedNet", "replace_downsampling"]
