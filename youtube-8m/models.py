"""Base class of the video classification models."""


class BaseModel(object):
  """A model maps a batch of inputs to {"predictions": [batch, vocab_size] in (0, 1)}."""

  def create_model(self, model_input, vocab_size, **unused_params):
    raise NotImplementedError()
