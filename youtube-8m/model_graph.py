"""The model graph shared by train.py, eval.py and the ensemble tools.

* ``define_flags()``: the model/ensemble flags of train.py and eval.py (not of inference.py).
* ``ModelConfig``: every setting that shapes the graph (defaults: the flags'), from flags
  and/or model_flags.json, with the consistency checks; the only reader of the model flags.
* ``build_model()``: the (ensemble) graph under variable scope ``tower``: model 0 in
  ``tower/``, model i in ``tower/model{i}/``; predictions = sum_i ensemble_wts[i] * p_i.
* ``build_inference_graph()`` / ``export_inference_meta()``: only the model behind two
  placeholders (``input_batch_raw``, ``num_frames``), the meta graph of inference checkpoints.
"""

import dataclasses
import sys
from typing import List

import tensorflow as tf
from absl import logging

from . import dataset_layout
from . import frame_level_models
from . import losses
from . import model_utils
from . import readers
from . import utils
from . import video_level_models

tf1 = tf.compat.v1
flags = tf1.flags
FLAGS = flags.FLAGS

FRAME_LEVEL_MODELS = ("NetVLADModelLF",)
VIDEO_LEVEL_MODELS = ("LogisticModel", "MoeModel")

# model_flags.json keys. The first five are the original's; the rest record the
# architecture so that eval.py and resumed training rebuild exactly the trained graph.
ORIGINAL_KEYS = ("model", "feature_sizes", "feature_names", "frame_features", "label_loss")
# Keys of an original json that describe its reader; its `model` and `label_loss` were
# dead flags there (the original always trained NetVLADModelLF with cross-entropy).
ORIGINAL_READER_KEYS = ("feature_sizes", "feature_names", "frame_features")
# A different value would build different variables or different predictions: refused.
STRICT_KEYS = ORIGINAL_KEYS + (
    "num_classes", "ensemble_num", "netvlad_cluster_size", "netvlad_hidden_size",
    "float16_flag", "gating", "gating_remove_diag", "moe_num_mixtures",
    "moe_prob_gating", "moe_prob_gating_input", "video_level_classifier_model")
# May legitimately differ between training and evaluation (e.g. tuning mixing weights).
SOFT_KEYS = ("iterations", "sample_random_frames", "ensemble_wts", "moe_l2")
TRAINING_KEY = "training"
# The repeated flags (one value per model) and the type of their values.
LIST_FIELDS = {"netvlad_cluster_size": int, "netvlad_hidden_size": int, "ensemble_wts": float}
MEMBER_PREDICTIONS = "member_predictions"


def define_flags(adopt_into=None):
  """Flags shared by train.py and eval.py (the model modules define theirs at import).

  adopt_into: the calling tool's __name__; its --help then lists these and the model modules'
  flags too (absl lists only the main module's key flags).
  """
  flags.DEFINE_string("model", "",
                      "Model class: NetVLADModelLF (frame level) or LogisticModel / MoeModel "
                      "(video level). Empty: NetVLADModelLF with --frame_features, else "
                      "LogisticModel.")
  flags.DEFINE_bool("frame_features", False,
                    "True: frame-level SequenceExample data; False: video-level Example data.")
  flags.DEFINE_string("feature_names", "mean_rgb", "Comma list of feature names.")
  flags.DEFINE_string("feature_sizes", "1024", "Comma list of feature sizes.")
  flags.DEFINE_integer("num_classes", dataset_layout.NUM_CLASSES,
                       "Vocabulary size (3862 in the 2018 data).")
  flags.DEFINE_string("label_loss", "CrossEntropyLoss",
                      "Loss: CrossEntropyLoss, HingeLoss or SoftmaxLoss.")
  flags.DEFINE_integer("ensemble_num", 1, "Number of NetVLADModelLF models in one graph.")
  flags.DEFINE_multi_integer("netvlad_cluster_size", [64],
                             "NetVLAD cluster size K; repeat once per model, in model order.")
  flags.DEFINE_multi_integer("netvlad_hidden_size", [1024],
                             "Hidden size H; repeat once per model, in model order.")
  flags.DEFINE_multi_float("ensemble_wts", [1.0],
                           "Mixing weight of each model (ensembles only); repeat once per "
                           "model, in model order.")
  if adopt_into:
    module = sys.argv[0] if adopt_into == "__main__" else adopt_into  # absl's name of main
    for source in (__name__, frame_level_models.__name__, video_level_models.__name__):
      for flag in FLAGS.get_key_flags_for_module(source):
        FLAGS.register_key_flag_for_module(module, flag)


@dataclasses.dataclass
class ModelConfig:
  """The model settings; the defaults are the flags' (a frame-level config gives only what
  differs). Built from flags or model_flags.json by from_dict, normalised by __post_init__."""
  model: str = ""  # empty: NetVLADModelLF with frame_features, else LogisticModel
  frame_features: bool = False
  feature_names: str = "mean_rgb"
  feature_sizes: str = "1024"
  num_classes: int = dataset_layout.NUM_CLASSES
  label_loss: str = "CrossEntropyLoss"
  ensemble_num: int = 1
  netvlad_cluster_size: List[int] = dataclasses.field(default_factory=lambda: [64])
  netvlad_hidden_size: List[int] = dataclasses.field(default_factory=lambda: [1024])
  ensemble_wts: List[float] = dataclasses.field(default_factory=lambda: [1.0])
  float16_flag: bool = False
  gating: bool = False
  # Recorded as the original's flag; only True is supported (checked in validate).
  netvlad_add_batch_norm: bool = True
  gating_remove_diag: bool = False
  iterations: int = 30
  sample_random_frames: bool = True
  video_level_classifier_model: str = "MoeModel"
  moe_num_mixtures: int = 5
  moe_l2: float = 1e-8
  moe_prob_gating: bool = False
  moe_prob_gating_input: str = "prob"

  def __post_init__(self):
    # The one normalisation of every source: flags (tuples), json (lists), tools, tests.
    if not self.model:
      self.model = "NetVLADModelLF" if self.frame_features else "LogisticModel"
    for name in LIST_FIELDS:
      setattr(self, name, _normalized(name, getattr(self, name)))
    if self.ensemble_num == 1:
      self.ensemble_wts = [1.0]

  @classmethod
  def from_dict(cls, values):
    """From {field: value} (this run's flags or a model_flags.json); other keys (training,
    ensemble_sources, ...) are ignored, missing fields take the defaults."""
    return cls(**{name: values[name] for name in CONFIG_FIELDS if name in values})

  @property
  def features(self):
    """(names, sizes) of --feature_names / --feature_sizes."""
    return utils.parse_feature_flags(self.feature_names, self.feature_sizes)

  def validate(self):
    """Checks that name the flag at fault."""
    sizes = self.features[1]
    if self.model not in FRAME_LEVEL_MODELS + VIDEO_LEVEL_MODELS:
      raise ValueError("--model=%r is not one of %s" % (
          self.model, ", ".join(FRAME_LEVEL_MODELS + VIDEO_LEVEL_MODELS)))
    if self.model in FRAME_LEVEL_MODELS and not self.frame_features:
      raise ValueError("--model=%s is a frame-level model: pass --frame_features (with "
                       "--feature_names='rgb,audio' --feature_sizes='1024,128')" % self.model)
    if self.model in VIDEO_LEVEL_MODELS and self.frame_features:
      raise ValueError("--model=%s is a video-level model: it reads video-level data "
                       "(--noframe_features, --feature_names='mean_rgb,mean_audio')"
                       % self.model)
    if self.model == "NetVLADModelLF" and (len(sizes) < 2 or sizes[0] != 1024):
      raise ValueError("NetVLADModelLF reads rgb (1024) then audio columns: "
                       "--feature_names/--feature_sizes are %r/%r, expected 'rgb,audio'/"
                       "'1024,128'" % (self.feature_names, self.feature_sizes))
    if self.num_classes < 1:
      raise ValueError("--num_classes must be positive, got %d" % self.num_classes)
    losses.get_loss(self.label_loss)
    for name in ("ensemble_num", "iterations", "moe_num_mixtures"):
      if getattr(self, name) < 1:
        raise ValueError("--%s must be >= 1, got %d" % (name, getattr(self, name)))
    if self.ensemble_num > 1 and self.model != "NetVLADModelLF":
      raise ValueError("--ensemble_num=%d: ensembles are built of NetVLADModelLF models, "
                       "not %s" % (self.ensemble_num, self.model))
    for name in LIST_FIELDS:  # __post_init__ made ensemble_wts [1.0] for a single model
      values = getattr(self, name)
      if len(values) != self.ensemble_num:
        raise ValueError("--%s was given %d time(s) (%s) but --ensemble_num=%d: give it once "
                         "per model" % (name, len(values), values, self.ensemble_num))
      if name != "ensemble_wts" and any(v < 1 for v in values):
        raise ValueError("--%s values must be positive, got %s" % (name, values))
    if not self.netvlad_add_batch_norm:
      raise ValueError("--netvlad_add_batch_norm=False is not supported: NetVLADModelLF "
                       "always batch-normalizes the cluster assignments (the original's other "
                       "branch was broken)")
    if self.video_level_classifier_model not in VIDEO_LEVEL_MODELS:
      raise ValueError("--video_level_classifier_model=%r is not one of %s" % (
          self.video_level_classifier_model, ", ".join(VIDEO_LEVEL_MODELS)))
    if self.moe_prob_gating_input not in ("prob", "input"):
      raise ValueError("--moe_prob_gating_input must be 'prob' or 'input', got %r"
                       % self.moe_prob_gating_input)
    return self

  def to_json_dict(self):
    return dataclasses.asdict(self)

  def describe(self):
    if self.model != "NetVLADModelLF":
      return self.model
    parts = ["c%dh%d" % (c, h) for c, h in zip(self.netvlad_cluster_size,
                                               self.netvlad_hidden_size)]
    text = "NetVLADModelLF " + "+".join(parts)
    if self.ensemble_num > 1:
      text += " weights %s" % self.ensemble_wts
    if self.float16_flag:
      text += " (float16 kernels)"
    return text

  def make_reader(self):
    return readers.make_reader(self.frame_features, *self.features, self.num_classes)


CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(ModelConfig))


def notice_flags_without_effect():
  """One line for each flag the seed's commands pass that the original ignored."""
  if FLAGS["netvlad_relu"].present and not FLAGS.netvlad_relu:
    logging.info("--netvlad_relu=False has no effect: relu6 follows hidden1's batch norm, "
                 "as in the original")


def read_stored_flags(directory, required=True):
  """The model settings recorded in directory/model_flags.json (None if absent and not
  required). An original json yields only its reader keys: the architecture of such a
  train_dir comes from the command's flags, as it did in the original."""
  stored = utils.read_model_flags(directory, required=required)
  if stored is None:
    return None
  path = utils.model_flags_path(directory)
  if not set(stored) - set(ORIGINAL_KEYS):  # written by the original code
    logging.info("%s was written by the original code: the architecture comes from this "
                 "command's flags", path)
    return {key: stored[key] for key in ORIGINAL_READER_KEYS if key in stored}
  if stored.get("netvlad_relu") is False:
    raise ValueError("%s records netvlad_relu=false: its checkpoints were trained by an earlier "
                     "version of this project without relu6 after hidden1, a network this "
                     "version does not build; train again" % path)
  return stored


def config_from_flags():
  """The configuration given by this run's flags (train.py)."""
  notice_flags_without_effect()
  return ModelConfig.from_dict({name: FLAGS[name].value for name in CONFIG_FIELDS}).validate()


def _normalized(name, value):
  """A field's value as ModelConfig holds it (a list of int / float for the repeated flags)."""
  return [LIST_FIELDS[name](v) for v in value] if name in LIST_FIELDS else value


def check_same_architecture(stored, config, source):
  """Raises naming every strict key whose stored value differs from config's."""
  differences = []
  for name in STRICT_KEYS:
    if name in stored and _normalized(name, stored[name]) != getattr(config, name):
      differences.append("--%s: %r in %s, %r now" % (name, stored[name], source,
                                                     getattr(config, name)))
  if differences:
    raise ValueError("The model configuration differs from %s (use another --train_dir, or "
                     "--start_new_model to start over): %s"
                     % (source, "; ".join(differences)))


def config_for_evaluation(train_dir, explicit_checks=()):
  """The configuration of the model stored in train_dir, with this run's explicit flags.

  Flags not given on the command line come from model_flags.json (an original json gives
  only the reader; the rest comes from the flags). A given flag must match a strict key of
  the json; soft keys (iterations, ensemble_wts, ...) may differ. Training-only flags in
  ``explicit_checks`` (base_learning_rate, ...) are compared and only warned about.
  """
  notice_flags_without_effect()
  stored = read_stored_flags(train_dir)
  source = utils.model_flags_path(train_dir)
  config = ModelConfig.from_dict({
      name: stored[name] if name in stored and not FLAGS[name].present else FLAGS[name].value
      for name in CONFIG_FIELDS})
  check_same_architecture(stored, config, source)
  training = stored.get(TRAINING_KEY, {})
  for name in explicit_checks:
    if FLAGS[name].present and name in training and training[name] != FLAGS[name].value:
      logging.warning("--%s=%r has no effect on evaluation (the checkpoints were trained with "
                      "%r)", name, FLAGS[name].value, training[name])
  for name in SOFT_KEYS:
    value = getattr(config, name)
    if FLAGS[name].present and name in stored and _normalized(name, stored[name]) != value:
      logging.info("--%s=%r (training used %r)", name, value, stored[name])
  return config.validate()


def create_global_step():
  """The original's int32 `global_step` variable (non-trainable, GLOBAL_STEP collection)."""
  return tf1.get_variable(
      "global_step", shape=[], dtype=tf.int32, initializer=tf.zeros_initializer(),
      trainable=False,
      collections=[tf1.GraphKeys.GLOBAL_VARIABLES, tf1.GraphKeys.GLOBAL_STEP])


def build_model(config, model_input_raw, num_frames, is_training, reuse=None,
                compute_dtype=tf.float32):
  """Builds the (ensemble) model under scope `tower`; returns (predictions, model_input).

  model_input_raw: the reader's video_matrix (frame level: uint8-quantized frames, zero bytes
  past num_frames) or dequantized float32 features (the inference graph's placeholder).
  model_input = the L2-normalized features (each frame's rgb+audio vector as a whole), the
  original's `input_batch`. Quantized frames of a single model are instead dequantized and
  normalized after its frame sampling, rgb and audio columns apart
  (model_utils.sampled_feature_blocks): the same values up to float32 rounding, for far less
  memory, and less work when it samples fewer frames than the video holds.
  compute_dtype (from --compute_dtype, not part of the config: the variables do not depend on
  it) is the dtype of the matmuls; predictions are float32.
  """
  quantized = model_input_raw.dtype == tf.uint8
  valid = tf.sequence_mask(num_frames, tf.shape(model_input_raw)[1]) if quantized else None
  model_input = model_utils.input_features(model_input_raw, valid)
  # An ensemble's models sample one normalized tensor, instead of normalizing n samples.
  model_frames = model_input
  if quantized and config.ensemble_num * config.iterations <= model_input_raw.shape[1]:
    model_frames = model_input_raw
  classifier_params = dict(
      num_mixtures=config.moe_num_mixtures, l2_penalty=config.moe_l2,
      float16_flag=config.float16_flag, prob_gating=config.moe_prob_gating,
      prob_gating_input=config.moe_prob_gating_input, remove_diag=config.gating_remove_diag,
      compute_dtype=compute_dtype)
  with tf1.variable_scope("tower", reuse=reuse):
    if config.model == "NetVLADModelLF":
      predictions = []
      for index in range(config.ensemble_num):
        scope = "model%d" % index if index else tf1.get_variable_scope()
        with tf1.variable_scope(scope):
          result = frame_level_models.NetVLADModelLF().create_model(
              model_frames, config.num_classes, num_frames=num_frames,
              cluster_size=config.netvlad_cluster_size[index],
              hidden_size=config.netvlad_hidden_size[index], is_training=is_training,
              iterations=config.iterations,
              sample_random_frames=config.sample_random_frames, gating=config.gating,
              # Evaluation/inference sample each model's frames with a fixed seed.
              sampling_seed=None if is_training else (0, index),
              classifier_model=config.video_level_classifier_model, **classifier_params)
        predictions.append(result["predictions"])
        # Each member's own predictions, for mixing-weight search.
        tf1.add_to_collection(MEMBER_PREDICTIONS, result["predictions"])
      if config.ensemble_num == 1:
        mixed = predictions[0]
      else:
        mixed = tf.add_n([weight * p for weight, p in zip(config.ensemble_wts, predictions)])
    else:
      model = getattr(video_level_models, config.model)()
      mixed = model.create_model(model_input, config.num_classes, is_training=is_training,
                                 **classifier_params)["predictions"]
  return tf.identity(mixed, name="predictions"), model_input


def input_shape(config):
  """Shape of one raw input batch: [None, 300, D] (frame level) or [None, D]."""
  feature_dim = sum(config.features[1])
  if config.frame_features:
    return [None, dataset_layout.MAX_FRAMES, feature_dim]
  return [None, feature_dim]


def build_inference_graph(config):
  """(graph, saver): the model behind placeholders, for inference checkpoints' meta graphs.

  Collections as the original's submission meta: global_step, input_batch_raw, input_batch,
  num_frames, predictions (and the standard variable collections).
  """
  graph = tf.Graph()
  with graph.as_default():
    global_step = create_global_step()
    model_input_raw = tf1.placeholder(tf.float32, input_shape(config), name="input_batch_raw")
    num_frames = tf1.placeholder(tf.int32, [None], name="num_frames")
    predictions, model_input = build_model(config, model_input_raw, num_frames,
                                           is_training=False)
    for name, tensor in (("global_step", global_step), ("input_batch_raw", model_input_raw),
                         ("input_batch", model_input), ("num_frames", num_frames),
                         ("predictions", predictions)):
      tf1.add_to_collection(name, tensor)
    saver = tf1.train.Saver(tf1.global_variables(), sharded=False)
  return graph, saver


def export_inference_meta(meta_path, config):
  """Writes the inference graph's MetaGraphDef (with its saver_def) to meta_path."""
  graph, saver = build_inference_graph(config)
  with graph.as_default():
    tf1.train.export_meta_graph(filename=meta_path, graph=graph,
                                saver_def=saver.as_saver_def(), clear_devices=True)
  return meta_path

