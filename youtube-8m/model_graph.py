"""The model graph shared by train.py, eval.py and the ensemble tools: ``ModelConfig`` (every
setting that shapes the graph: its flag and its model_flags.json rules), ``build_model()`` (the
ensemble under scope ``tower``) and the inference checkpoints' meta graph."""

import dataclasses
import json
from typing import List

import tensorflow as tf
from absl import flags
from absl import logging

from . import dataset_layout
from . import fp16_layers
from . import frame_level_models
from . import losses
from . import model_utils
from . import readers
from . import storage
from . import utils
from . import video_level_models

tf1 = tf.compat.v1
FLAGS = flags.FLAGS

FRAME_LEVEL_MODELS = ("NetVLADModelLF",)
VIDEO_LEVEL_MODELS = ("LogisticModel", "MoeModel")

# model_flags.json keys. The first five are the original's; the rest record the
# architecture so that eval.py and resumed training rebuild exactly the trained graph.
ORIGINAL_KEYS = ("model", "feature_sizes", "feature_names", "frame_features", "label_loss")
# Keys of an original json that describe its reader; its `model` and `label_loss` were
# dead flags there (the original always trained NetVLADModelLF with cross-entropy).
ORIGINAL_READER_KEYS = ("feature_sizes", "feature_names", "frame_features")
TRAINING_KEY = "training"
MEMBER_PREDICTIONS = "member_predictions"
# How model_flags.json compares a setting with this run's value (the `key` of a setting).
STRICT = "strict"  # another value builds other variables or other predictions: refused
SOFT = "soft"  # may differ between training and evaluation (e.g. tuning mixing weights)


def setting(default, help_text, key=None):
  """A ModelConfig field: its default, its flag's help and its model_flags.json key kind
  (STRICT, SOFT or None: not compared). The field's type gives the flag's and the json type."""
  metadata = {"help": help_text, "key": key}
  if isinstance(default, list):
    return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class ModelConfig:
  """The model settings, from flags or model_flags.json (from_dict), normalised by
  __post_init__."""
  model: str = setting(
      "", "Model class: NetVLADModelLF (frame level) or LogisticModel / MoeModel (video "
      "level). Empty: NetVLADModelLF with --frame_features, else LogisticModel.", STRICT)
  frame_features: bool = setting(
      False, "True: frame-level SequenceExample data; False: video-level Example data.", STRICT)
  feature_names: str = setting("mean_rgb", "Comma list of feature names.", STRICT)
  feature_sizes: str = setting("1024", "Comma list of feature sizes.", STRICT)
  num_classes: int = setting(dataset_layout.NUM_CLASSES,
                             "Vocabulary size (3862 in the 2018 data).", STRICT)
  label_loss: str = setting("CrossEntropyLoss",
                            "Loss: CrossEntropyLoss, HingeLoss or SoftmaxLoss.", STRICT)
  ensemble_num: int = setting(1, "Number of NetVLADModelLF models in one graph.", STRICT)
  netvlad_cluster_size: List[int] = setting(
      [64], "NetVLAD cluster size K; repeat once per model, in model order.", STRICT)
  netvlad_hidden_size: List[int] = setting(
      [1024], "Hidden size H; repeat once per model, in model order.", STRICT)
  ensemble_wts: List[float] = setting(
      [1.0], "Mixing weight of each model (ensembles only); repeat once per model, in model "
      "order.", SOFT)
  float16_flag: bool = setting(
      False, "Store the four large kernels of each model (hidden1, MoE gates, MoE experts, "
      "probability gating) as float16 variables; they are cast to --compute_dtype (float32 "
      "by default) for the matmuls.", STRICT)
  kernel_storage: List[str] = setting(
      [], "Storage of each model's large kernels: float32, float16 (the four kernels of "
      "--float16_flag) or uint8 (8 bits: those four plus hidden2 and the context gating, each "
      "as uint8 codes and a float32 <kernel>_quantization codebook [2, out], made from float "
      "checkpoints by build_ensemble; quantization.py). Repeat once per model, in model "
      "order. Empty: every model as --float16_flag says.", STRICT)
  gating: bool = setting(False, "Context gating on the output of hidden2.", STRICT)
  # Recorded as the original's flag; only True is supported (checked in validate).
  netvlad_add_batch_norm: bool = setting(
      True, "Batch-normalize the NetVLAD cluster assignments (the original's NetVLAD has no "
      "working alternative; False is refused by model_graph).")
  gating_remove_diag: bool = setting(
      False, "In 'prob' gating, remove each class's own contribution (diag of the weights).",
      STRICT)
  iterations: int = setting(30, "Number of frames sampled per video.", SOFT)
  sample_random_frames: bool = setting(
      True, "True: sample frames uniformly with replacement; False: a random window of "
      "consecutive frames.", SOFT)
  video_level_classifier_model: str = setting(
      "MoeModel", "Classifier on top of the NetVLAD features (a video_level_models class).",
      STRICT)
  moe_num_mixtures: int = setting(
      5, "Number of experts per class in MoeModel (excluding the dummy expert).", STRICT)
  moe_l2: float = setting(1e-8, "L2 penalty on the MoE gate and expert kernels.", SOFT)
  moe_prob_gating: bool = setting(
      False, "Probability (label-correlation) gating on the MoE output.", STRICT)
  moe_prob_gating_input: str = setting(
      "prob", "Input of the probability gating: 'prob' (the MoE probabilities, V x V "
      "weights) or 'input' (the MoE input, D x V weights).", STRICT)

  def __post_init__(self):
    # The one normalisation of every source: flags (tuples), json (lists), tools, tests.
    if not self.model:
      self.model = "NetVLADModelLF" if self.frame_features else "LogisticModel"
    for name in LIST_FIELDS:
      setattr(self, name, _normalized(name, getattr(self, name)))
    if self.ensemble_num == 1:
      self.ensemble_wts = [1.0]
    # Storages that --float16_flag gives anyway are recorded as [] (the original's json).
    if all(storage == default_storage(self.float16_flag) for storage in self.kernel_storage):
      self.kernel_storage = []

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
    self._validate_model()
    if self.num_classes < 1:
      raise ValueError("--num_classes must be positive, got %d" % self.num_classes)
    losses.get_loss(self.label_loss)
    for name in ("ensemble_num", "iterations", "moe_num_mixtures"):
      if getattr(self, name) < 1:
        raise ValueError("--%s must be >= 1, got %d" % (name, getattr(self, name)))
    if self.ensemble_num > 1 and self.model != "NetVLADModelLF":
      raise ValueError("--ensemble_num=%d: ensembles are built of NetVLADModelLF models, "
                       "not %s" % (self.ensemble_num, self.model))
    # __post_init__ made ensemble_wts [1.0] for a single model.
    for name in ("netvlad_cluster_size", "netvlad_hidden_size", "ensemble_wts"):
      values = getattr(self, name)
      if len(values) != self.ensemble_num:
        raise ValueError("--%s was given %d time(s) (%s) but --ensemble_num=%d: give it once "
                         "per model" % (name, len(values), values, self.ensemble_num))
      if name != "ensemble_wts" and any(v < 1 for v in values):
        raise ValueError("--%s values must be positive, got %s" % (name, values))
    if self.kernel_storage and len(self.kernel_storage) != self.ensemble_num:
      raise ValueError("--kernel_storage was given %d time(s) (%s) but --ensemble_num=%d: "
                       "give it once per model, or not at all (--float16_flag's storage)"
                       % (len(self.kernel_storage), self.kernel_storage, self.ensemble_num))
    bad = [v for v in self.kernel_storage if v not in KERNEL_STORAGES]
    if bad:
      raise ValueError("--kernel_storage values must be %s, got %s"
                       % (", ".join(KERNEL_STORAGES), bad))
    self._validate_classifier()
    return self

  def _validate_model(self):
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

  def _validate_classifier(self):
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
    if (self.gating_remove_diag and self.moe_prob_gating and self.moe_prob_gating_input ==
        "prob" and "uint8" in self.kernel_storage):
      raise ValueError("--gating_remove_diag needs the probability gating's diagonal, which "
                       "--kernel_storage=uint8 does not keep: store those models in float32 "
                       "or float16")

  def to_json_dict(self):
    return dataclasses.asdict(self)

  def describe(self):
    if self.model != "NetVLADModelLF":
      return self.model
    text = "NetVLADModelLF " + "+".join("c%dh%d" % sizes for sizes in zip(
        self.netvlad_cluster_size, self.netvlad_hidden_size))
    if self.ensemble_num > 1:
      text += " weights %s" % self.ensemble_wts
    if self.kernel_storage:
      text += " (kernels %s)" % "+".join(self.kernel_storage)
    elif self.float16_flag:
      text += " (float16 kernels)"
    return text

  def member_storage(self, index):
    """The kernel storage of model index: float32, float16 or uint8."""
    if self.kernel_storage:
      return self.kernel_storage[index]
    return default_storage(self.float16_flag)

  def make_reader(self):
    return readers.make_reader(self.frame_features, *self.features, self.num_classes)


KERNEL_STORAGES = tuple(fp16_layers.KERNEL_STORAGES)  # float32, float16, uint8


def default_storage(float16_flag):
  """The kernel storage of a model without --kernel_storage."""
  return "float16" if float16_flag else "float32"


FIELDS = dataclasses.fields(ModelConfig)
CONFIG_FIELDS = tuple(field.name for field in FIELDS)
STRICT_KEYS = tuple(f.name for f in FIELDS if f.metadata["key"] == STRICT)
SOFT_KEYS = tuple(f.name for f in FIELDS if f.metadata["key"] == SOFT)
# The repeated flags (one value per model) and the type of their values.
LIST_FIELDS = {f.name: f.type.__args__[0] for f in FIELDS
               if f.type in (List[int], List[float], List[str])}


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1 here


def _is_number(value):
  return _is_int(value) or isinstance(value, float)


def _is_list_of(is_item):
  return lambda value: isinstance(value, list) and value and all(map(is_item, value))


# By a field's type: its flag's definer and its model_flags.json rule (what the value must be,
# checked on every read so that a hand-edited file fails naming its key).
_TYPES = {
    str: (flags.DEFINE_string, "a string", lambda value: isinstance(value, str)),
    bool: (flags.DEFINE_bool, "true or false", lambda value: isinstance(value, bool)),
    int: (flags.DEFINE_integer, "an integer", _is_int),
    float: (flags.DEFINE_float, "a number", _is_number),
    List[int]: (flags.DEFINE_multi_integer, "a list of integers", _is_list_of(_is_int)),
    List[float]: (flags.DEFINE_multi_float, "a list of numbers", _is_list_of(_is_number)),
    # kernel_storage: [] (as --float16_flag says) or one storage per model.
    List[str]: (flags.DEFINE_multi_string, "a list of strings", lambda value: isinstance(
        value, list) and all(isinstance(v, str) for v in value)),
}
_JSON_RULES = [(expected, is_valid, [f.name for f in FIELDS if f.type == kind])
               for kind, (_, expected, is_valid) in _TYPES.items()]
_JSON_RULES.append(("an object", lambda value: isinstance(value, dict), [TRAINING_KEY]))
# Written by the original code as well as by this project's tools.
_REQUIRED_JSON_KEYS = ("feature_names", "feature_sizes", "frame_features")


def define_flags():
  """The model flags of the tools that build the model: one per ModelConfig field, and
  --netvlad_relu (the original's commands pass it; it has no effect)."""
  for field in FIELDS:
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    _TYPES[field.type][0](field.name, default, field.metadata["help"])
  flags.DEFINE_bool("netvlad_relu", True,
                    "No effect (accepted for the original's commands): relu6 always follows "
                    "hidden1's batch norm, as in the original.")


def read_model_flags(train_dir, required=True):
  """The dict of train_dir/model_flags.json (None if absent and not required), its values
  checked: ValueError naming the path and the key of a missing or mistyped value."""
  path = utils.model_flags_path(train_dir)
  if not storage.exists(path):
    if required:
      raise IOError("Cannot find %s. Did you run train.py (or eval.py) on this train_dir?"
                    % path)
    return None
  try:
    model_flags = json.loads(storage.read_text(path))
  except ValueError as error:  # UnicodeDecodeError included
    raise ValueError("%s is not valid JSON: %s" % (path, error))
  if not isinstance(model_flags, dict):
    raise ValueError("%s holds a JSON %s, expected an object of model flags"
                     % (path, type(model_flags).__name__))
  missing = [key for key in _REQUIRED_JSON_KEYS if key not in model_flags]
  if missing:
    raise ValueError("%s lacks %s" % (path, ", ".join(missing)))
  for expected, is_valid, keys in _JSON_RULES:
    for key in keys:
      if key in model_flags and not is_valid(model_flags[key]):
        raise ValueError("%s: %s is %s, expected %s"
                         % (path, key, json.dumps(model_flags[key]), expected))
  return model_flags


def notice_flags_without_effect():
  """One line for each flag the original's commands pass that the original ignored."""
  if FLAGS["netvlad_relu"].present and not FLAGS.netvlad_relu:
    logging.info("--netvlad_relu=False has no effect: relu6 follows hidden1's batch norm, "
                 "as in the original")


def read_stored_flags(directory, required=True):
  """The model settings recorded in directory/model_flags.json (None if absent and not
  required). An original json yields only its reader keys: the architecture of such a
  train_dir comes from the command's flags, as it did in the original."""
  stored = read_model_flags(directory, required=required)
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
  differences = ["--%s: %r in %s, %r now" % (name, stored[name], source, getattr(config, name))
                 for name in STRICT_KEYS
                 if name in stored and _normalized(name, stored[name]) != getattr(config, name)]
  if differences:
    raise ValueError("The model configuration differs from %s (use another --train_dir, or "
                     "--start_new_model to start over): %s"
                     % (source, "; ".join(differences)))


def config_for_evaluation(train_dir, explicit_checks=()):
  """The configuration of the model stored in train_dir, with this run's explicit flags.

  Flags not given come from model_flags.json. A given flag must match a strict key of the
  json; soft keys may differ. Training-only flags in ``explicit_checks`` are only warned about.
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
      trainable=False, collections=[tf1.GraphKeys.GLOBAL_VARIABLES, tf1.GraphKeys.GLOBAL_STEP])


def build_model(config, model_input_raw, num_frames, is_training, reuse=None,
                compute_dtype=tf.float32, sampling_seeds=None):
  """Builds the (ensemble) model under scope `tower`; returns (predictions, model_input).

  Model 0 in ``tower/``, model i in ``tower/model{i}/``; predictions = sum_i ensemble_wts[i] *
  p_i, float32. model_input_raw: the reader's uint8 frames (zero bytes past num_frames) or
  float32 features (the inference graph's placeholder). model_input: the L2-normalized
  features, the original's `input_batch`. compute_dtype: the matmuls' dtype. Evaluation and
  inference sample model i's frames with the fixed seed sampling_seeds[i] (default (0, i)).
  """
  quantized = model_input_raw.dtype == tf.uint8
  valid = tf.sequence_mask(num_frames, tf.shape(model_input_raw)[1]) if quantized else None
  # Each frame's vector L2-normalized as a whole.
  model_input = tf.nn.l2_normalize(model_utils.dequantize_frames(model_input_raw, valid)
                                   if quantized else model_input_raw, -1)
  # The models sample the uint8 frames unless they sample more frames in all than a video
  # holds: then they sample one normalized tensor, instead of normalizing n samples.
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
              sampling_seed=None if is_training else (
                  sampling_seeds[index] if sampling_seeds else (0, index)),
              classifier_model=config.video_level_classifier_model,
              kernel_storage=config.member_storage(index), **classifier_params)
        predictions.append(result["predictions"])
        # Each member's own predictions, for mixing-weight search.
        tf1.add_to_collection(MEMBER_PREDICTIONS, result["predictions"])
      mixed = predictions[0] if config.ensemble_num == 1 else tf.add_n(
          [weight * p for weight, p in zip(config.ensemble_wts, predictions)])
    else:
      model = getattr(video_level_models, config.model)()
      mixed = model.create_model(model_input, config.num_classes, is_training=is_training,
                                 kernel_storage=config.member_storage(0),
                                 **classifier_params)["predictions"]
  return tf.identity(mixed, name="predictions"), model_input


def input_shape(config):
  """Shape of one raw input batch: [None, 300, D] (frame level) or [None, D]."""
  frames = [dataset_layout.MAX_FRAMES] if config.frame_features else []
  return [None] + frames + [sum(config.features[1])]


def build_inference_graph(config):
  """(graph, saver): the model behind placeholders, for inference checkpoints' meta graphs,
  with the original's collections: global_step, input_batch_raw, input_batch, num_frames,
  predictions."""
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


def export_inference_meta(meta_path, config, built=None):
  """Writes the inference graph's MetaGraphDef (with its saver_def) to meta_path. built: the
  (graph, saver) of build_inference_graph(config), if the caller has it (left unchanged)."""
  graph, saver = built or build_inference_graph(config)
  with graph.as_default():
    tf1.train.export_meta_graph(filename=meta_path, graph=graph,
                                saver_def=saver.as_saver_def(), clear_devices=True)
  return meta_path

