"""Facts about the YouTube-8M 2018 data shared by the readers and the synthetic generator.

No TensorFlow import here, so that tools can validate flags before loading TF.
"""

NUM_CLASSES = 3862  # vocabulary size of the 2018 release
MAX_FRAMES = 300  # frames kept per video by the frame-level reader
# uint8 feature quantization of the release: x = q * QUANT_SCALE + QUANT_BIAS, x in [-2, 2].
QUANT_SCALE = 4.0 / 255.0
QUANT_BIAS = 4.0 / 512.0 - 2.0


def dequantize(quantized):
  """uint8-quantized values (as float: numpy or a tensor) -> floats: q * 4/255 + (4/512 - 2)."""
  return quantized * QUANT_SCALE + QUANT_BIAS

# The 60 held-out validate files of the 10th-place solution (its 2-char GCS file codes):
# the training set is train + validate minus these, and eval uses exactly these.
HOLDOUT_VALIDATE_CODES = (
    "0t", "1Y", "2J", "45", "5K", "5u", "63", "6f", "8F", "8f", "9y", "Ap", "BN", "CH", "CI",
    "Dz", "Er", "GY", "I6", "JP", "JV", "K0", "MJ", "Mv", "Og", "Om", "PL", "QK", "Qh", "Ql",
    "T4", "UF", "Uy", "Vo", "X6", "XX", "Zq", "aR", "cU", "fr", "hw", "k3", "lw", "nX", "nl",
    "o6", "p7", "pL", "pg", "rx", "sZ", "sd", "uS", "uf", "y1", "y5", "yK", "yU", "z8", "zE")
