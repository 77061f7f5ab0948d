"""Trains a (Gated NetVLAD ensemble) video classifier on YouTube-8M TFRecords.

    python -m youtube-8m.train --train_data_pattern='TRAIN_GLOB,VALIDATE_GLOB' \
        --train_dir=DIR --frame_features --feature_names='rgb,audio' \
        --feature_sizes='1024,128' --netvlad_cluster_size=32 --netvlad_hidden_size=512 ...

Checkpoints ``DIR/model.ckpt-<step>`` are exported at steps 10, 10+E, 10+2E, ... (E =
--export_model_steps), every --save_model_secs, and when training ends or is interrupted
(SIGTERM/SIGINT). Running the same command again resumes from the newest model.ckpt-<step>
(weights, optimizer state and global_step); a changed architecture is refused.
"""

import contextlib
import json
import os
import signal
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import logging
from tensorflow.core.protobuf import rewriter_config_pb2

from . import checkpoint_utils
from . import eval_util
from . import fp16_layers
from . import gpu_check
from . import losses
from . import model_graph
from . import progress as progress_lib
from . import readers
from . import staging
from . import storage
from . import summaries
from . import utils

tf1 = tf.compat.v1
flags = tf1.flags
FLAGS = flags.FLAGS

model_graph.define_flags(adopt_into=__name__)
fp16_layers.define_compute_dtype_flag()
flags.declare_key_flag("compute_dtype")  # listed by --help
flags.DEFINE_string("train_dir", "/tmp/yt8m_model/",
                    "Directory for checkpoints, event files and model_flags.json.")
flags.DEFINE_string("train_data_pattern", "",
                    "'TRAIN_GLOB,VALIDATE_GLOB' (train files + validate files minus the 60 "
                    "held-out ones) or a single glob.")
flags.DEFINE_string("checkpoint_file", "",
                    "Start from this checkpoint (prefix relative to train_dir, e.g. an averaged "
                    "one) instead of the newest model.ckpt-<step>; variables it lacks (e.g. "
                    "optimizer slots) start fresh.")
flags.DEFINE_bool("start_new_model", False,
                  "Delete this train_dir's checkpoints, events and model_flags.json and start "
                  "over (other files in train_dir are kept).")
flags.DEFINE_integer("num_gpu", 1,
                     "Maximum number of GPUs (towers) to use; the batch is batch_size x towers.")
flags.DEFINE_bool("cpu_towers", False,
                  "Use --num_gpu CPU devices as the towers (multi-tower training on a machine "
                  "without GPUs).")
gpu_check.define_device_flag()
flags.declare_key_flag("allow_cpu_on_gpu_machine")  # listed by --help
flags.DEFINE_integer("batch_size", 1024, "Examples per tower per step.")
flags.DEFINE_float("regularization_penalty", 1.0, "Weight of the regularization losses.")
flags.DEFINE_float("base_learning_rate", 0.01, "Initial learning rate.")
flags.DEFINE_float("learning_rate_decay", 0.95,
                   "Learning-rate factor per --learning_rate_decay_examples (staircase).")
flags.DEFINE_float("learning_rate_decay_examples", 4000000, "Decay period in examples.")
flags.DEFINE_integer("num_epochs", 5, "Passes over the training files.")
flags.DEFINE_integer("max_steps", None, "Stop once global_step reaches this value.")
flags.DEFINE_integer("export_model_steps", 1000,
                     "Export model.ckpt-<step> at steps 10, 10+E, 10+2E, ...")
flags.DEFINE_integer("save_model_secs", 900,
                     "Also export a checkpoint every this many seconds (0: never), as the "
                     "original's Supervisor did.")
flags.DEFINE_integer("num_readers", 8, "Files read in parallel.")
flags.DEFINE_string("optimizer", "AdamOptimizer",
                    "AdamOptimizer, GradientDescentOptimizer, AdagradOptimizer or "
                    "RMSPropOptimizer (tf.compat.v1.train).")
flags.DEFINE_float("clip_gradient_norm", 1.0,
                   "Clip each gradient tensor to this L2 norm (<= 0: no clipping).")
flags.DEFINE_bool("log_device_placement", False, "Log the device of every op.")
flags.DEFINE_bool("batch_norm_warmup", True,
                  "Batch-norm moving averages use decay min(0.999, (1+step)/(10+step)), so short "
                  "runs evaluate well; False: the original's constant 0.999 from step 0.")
flags.DEFINE_integer("random_seed", None,
                     "Seed of the file/record shuffling, the initial weights and the training "
                     "frame sampling: the same command then trains the same model (on one "
                     "process). Default: random each run.")

OPTIMIZERS = ("AdamOptimizer", "GradientDescentOptimizer", "AdagradOptimizer",
              "RMSPropOptimizer")
# Hyper-parameters recorded in model_flags.json["training"] (informational).
TRAINING_FLAGS = ("batch_norm_warmup", "batch_size", "base_learning_rate", "learning_rate_decay",
                  "learning_rate_decay_examples", "regularization_penalty", "optimizer",
                  "clip_gradient_norm", "num_epochs", "max_steps", "export_model_steps",
                  "compute_dtype")
# Dynamic loss scaling of --compute_dtype=float16 (the policy of TF's LossScaleOptimizer).
LOSS_SCALE_INITIAL = 2.0**15
LOSS_SCALE_GROWTH_STEPS = 2000
# A gs:// train_dir gets its event files this often (TensorBoard follows training live), not
# only with the checkpoint exports.
EVENT_UPLOAD_SECS = 60


class TrainingDiverged(ValueError):
  """The loss or the weights became NaN or inf."""


class StopRequest(object):
  """Turns SIGTERM/SIGINT into a clean stop after the current step (then a checkpoint)."""

  def __init__(self):
    self.signal_name = None
    for signum in (signal.SIGTERM, signal.SIGINT):
      signal.signal(signum, self._handle)

  def _handle(self, signum, unused_frame):
    if self.signal_name is not None:  # a second signal: stop now
      raise KeyboardInterrupt()
    self.signal_name = signal.Signals(signum).name


def check_flags():
  for name in ("batch_size", "export_model_steps", "num_epochs", "max_steps"):
    if FLAGS[name].value is not None and FLAGS[name].value < 1:
      raise ValueError("--%s must be >= 1, got %d" % (name, FLAGS[name].value))
  if FLAGS.optimizer not in OPTIMIZERS:
    raise ValueError("--optimizer=%r is not one of %s" % (FLAGS.optimizer,
                                                          ", ".join(OPTIMIZERS)))
  if FLAGS.learning_rate_decay_examples <= 0:
    raise ValueError("--learning_rate_decay_examples must be > 0")
  if not FLAGS.train_data_pattern:
    raise ValueError("--train_data_pattern is required")


# TF_CONFIG task types, normalized: the original's "master", TF's "chief" and Vertex AI's
# worker-pool names all mean the same roles.
TASK_TYPE_ALIASES = {"master": "chief", "chief": "chief", "workerpool0": "chief",
                     "worker": "worker", "workerpool1": "worker", "ps": "ps",
                     "workerpool2": "ps", "evaluator": "evaluator", "workerpool3": "evaluator"}


class ClusterTask(object):
  """This process's role in a TF_CONFIG cluster (a lone process is the chief)."""

  def __init__(self, cluster=None, task_type="chief", task_index=0):
    self.cluster = cluster or {}
    self.task_type, self.task_index = task_type, task_index
    self.trainers = [(job, i) for job in ("chief", "worker")
                     for i in range(len(self.cluster.get(job, [])))]
    self.distributed = sum(len(addresses) for addresses in self.cluster.values()) > 1
    self.is_chief = task_type == "chief" and task_index == 0
    self.num_ps = len(self.cluster.get("ps", []))
    self.device = "/job:%s/task:%d" % (task_type, task_index)

  @property
  def trainer_index(self):
    return self.trainers.index((self.task_type, self.task_index))


def cluster_task():
  """Parses TF_CONFIG ({"cluster": {...}, "task": {"type", "index"}}) with clear errors."""
  text = os.environ.get("TF_CONFIG", "")
  if not text.strip():
    return ClusterTask()
  try:
    tf_config = json.loads(text)
  except ValueError as error:
    raise ValueError("TF_CONFIG is not valid JSON: %s" % error)
  cluster = {}
  for name, addresses in (tf_config.get("cluster") or {}).items():
    if name not in TASK_TYPE_ALIASES:
      raise ValueError("TF_CONFIG: unknown job %r in the cluster (known: %s)"
                       % (name, ", ".join(sorted(TASK_TYPE_ALIASES))))
    cluster.setdefault(TASK_TYPE_ALIASES[name], []).extend(addresses)
  task = tf_config.get("task") or {}
  task_type = TASK_TYPE_ALIASES.get(task.get("type", "chief"))
  task_index = int(task.get("index", 0))
  if task_type is None:
    raise ValueError("TF_CONFIG: unknown task type %r" % task.get("type"))
  if task_type == "evaluator":
    raise ValueError("TF_CONFIG task type 'evaluator': train.py does not evaluate; run "
                     "python -m youtube-8m.eval on the chief's train_dir instead")
  if cluster and task_index >= len(cluster.get(task_type, [])):
    raise ValueError("TF_CONFIG: task %s:%d is not in the cluster %s" % (task_type, task_index,
                                                                        cluster))
  if cluster and "chief" not in cluster:
    raise ValueError("TF_CONFIG: the cluster has no chief/master task: %s" % cluster)
  if len(cluster.get("chief", [])) > 1:
    raise ValueError("TF_CONFIG: more than one chief/master task: %s" % cluster["chief"])
  return ClusterTask(cluster, task_type, task_index)


def done_queues(task):
  """One queue per parameter server: each trainer puts a token when it ends, so that the
  parameter servers can exit instead of joining forever."""
  queues = []
  for index in range(task.num_ps):
    with tf.device("/job:ps/task:%d" % index):
      queues.append(tf1.FIFOQueue(len(task.trainers), tf.int32,
                                  shared_name="done_queue_%d" % index,
                                  name="done_queue_%d" % index))
  return queues


def run_parameter_server(task, server):
  """Serves variables until every trainer has signalled the end of training."""
  graph = tf.Graph()
  with graph.as_default():
    dequeue = done_queues(task)[task.task_index].dequeue()
  trainers = len(task.trainers)
  logging.info("Parameter server %d serving; waiting for %d trainers", task.task_index,
               trainers)
  with tf1.Session(server.target, graph=graph) as sess:
    for done in range(trainers):
      sess.run(dequeue)
      logging.info("Parameter server %d: %d/%d trainers done", task.task_index, done + 1,
                   trainers)
  logging.info("Parameter server %d exits", task.task_index)


def tower_devices():
  """min(--num_gpu, GPUs) GPUs, else one CPU; with --cpu_towers, --num_gpu CPU devices. Logs
  one line naming them; on a machine with NVIDIA GPUs that TensorFlow cannot use, raises
  gpu_check.GpuCheckError saying why (unless --allow_cpu_on_gpu_machine)."""
  if FLAGS.num_gpu < 0:
    raise ValueError("--num_gpu must be >= 0, got %d" % FLAGS.num_gpu)
  return gpu_check.model_devices(FLAGS.allow_cpu_on_gpu_machine, FLAGS.num_gpu,
                                 max(FLAGS.num_gpu, 1) if FLAGS.cpu_towers else 0)


def remove_training_artifacts(train_dir):
  """--start_new_model: delete what train.py wrote (not the whole directory)."""
  if not storage.isdir(train_dir):
    return
  removed = [name for name in map(lambda n: n.rstrip("/"), storage.listdir(train_dir))
             if name.startswith((checkpoint_utils.TRAIN_CHECKPOINT_BASENAME + "-",
                                 "events.out.tfevents"))
             or name in ("checkpoint", utils.MODEL_FLAGS_FILE)]
  for name in removed:
    storage.remove(os.path.join(train_dir, name))
  logging.info("--start_new_model: removed %d files of the previous run in %s", len(removed),
               train_dir)


def record_model_flags(train_dir, config):
  """Writes model_flags.json, or checks the architecture against an existing one."""
  stored = model_graph.read_stored_flags(train_dir, required=False)
  if stored is not None:
    model_graph.check_same_architecture(stored, config, utils.model_flags_path(train_dir))
  model_flags = config.to_json_dict()
  model_flags[model_graph.TRAINING_KEY] = {name: FLAGS[name].value for name in TRAINING_FLAGS}
  utils.write_model_flags(train_dir, model_flags)


def split_batch(batch, num_towers):
  """Splits every tensor of a batch into num_towers parts whose sizes differ by at most one
  row (the smaller last batch of an epoch included)."""
  if num_towers == 1:
    return [batch]
  rows = tf.shape(batch["labels"])[0]
  sizes = rows // num_towers + tf.cast(tf.range(num_towers) < rows % num_towers, tf.int32)
  parts = {key: tf.split(value, sizes, num=num_towers) for key, value in batch.items()}
  return [{key: parts[key][i] for key in batch} for i in range(num_towers)]


def average_gradients(tower_gradients):
  """[(mean over towers of each variable's gradient, variable)], None gradients dropped."""
  averaged = []
  for pairs in zip(*tower_gradients):
    grads = [g for g, _ in pairs if g is not None]
    if grads:
      averaged.append((tf.add_n(grads) / float(len(grads)) if len(grads) > 1 else grads[0],
                       pairs[0][1]))
  return averaged


class DynamicLossScale(object):
  """Loss scaling for float16 compute: the loss is multiplied by `scale` so that small float16
  gradients do not flush to zero; the gradients are divided by it again. A step whose
  gradients hold inf/NaN is skipped (global_step still advances) and halves the scale;
  LOSS_SCALE_GROWTH_STEPS good steps in a row double it. Its variables are local, never in a
  checkpoint: a resumed run starts again from LOSS_SCALE_INITIAL.
  """

  def __init__(self):
    local = [tf1.GraphKeys.LOCAL_VARIABLES]
    self.scale = tf1.get_variable("loss_scale", initializer=LOSS_SCALE_INITIAL,
                                  trainable=False, collections=local)
    self.good_steps = tf1.get_variable("loss_scale_good_steps", initializer=0,
                                       trainable=False, collections=local)

  def unscale(self, gradients):
    return [(g / self.scale, v) for g, v in gradients]

  def apply_if_finite(self, optimizer, gradients, global_step):
    """The train op: applies the (unscaled) gradients if all are finite, then updates the
    scale."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g, _ in gradients])

    def apply():
      with tf.control_dependencies([optimizer.apply_gradients(gradients, global_step)]):
        return tf.constant(True)

    def skip():
      with tf.control_dependencies([global_step.assign_add(1)]):
        return tf.constant(False)

    applied = tf.cond(finite, apply, skip)
    with tf.control_dependencies([applied]):
      good_steps = tf.where(finite, self.good_steps + 1, 0)
      grow = good_steps >= LOSS_SCALE_GROWTH_STEPS
      scale = tf.where(finite, tf.where(grow, 2.0 * self.scale, self.scale),
                       tf.maximum(0.5 * self.scale, 1.0))
      return tf.group(self.scale.assign(scale),
                      self.good_steps.assign(tf.where(grow, 0, good_steps)))


def clip_by_norm(t, clip_norm):
  """tf.clip_by_norm(t, clip_norm) (all axes), the same values without its gradient-size
  temporaries (57-90 MiB each for the MoE kernels at the seed's size): reduce_euclidean_norm
  sums the squares as reduce_sum(t * t) does (one Eigen sum of in * in) without a tensor of
  them, then the same sqrt, product and quotient (its where() only guards the gradient of the
  norm at 0); the product waits for the norm, so that it can write into t's buffer."""
  with tf1.name_scope("clip_by_norm"):
    l2norm = tf.math.reduce_euclidean_norm(t, keepdims=True)
    with tf.control_dependencies([l2norm]):
      intermediate = t * clip_norm
    return intermediate / tf.maximum(l2norm, clip_norm)


def loss_gradients(optimizer, label_loss, reg_loss, loss_scale, var_list):
  """optimizer.compute_gradients of (label_loss + --regularization_penalty * reg_loss) [x the
  loss scale]: [(gradient, variable)] for var_list.

  Computed as two parts added per variable, the same sum (bit for bit): the gradient of the
  regularization (penalty x scale x w for each regularized kernel) depends only on the weights,
  so TensorFlow would compute it as soon as the step starts and hold it (the MoE kernels': ~166
  MiB at the seed's size) until the label loss's gradient of the variable arrives at the end of
  its backward pass; here it waits for that gradient (a control dependency).
  """
  scale = loss_scale.scale if loss_scale else None
  data_loss = label_loss * scale if scale is not None else label_loss
  reg_total = FLAGS.regularization_penalty * reg_loss
  if scale is not None:
    reg_total *= scale
  gradients = []
  for gradient, variable in optimizer.compute_gradients(data_loss, var_list=var_list):
    with tf.control_dependencies([] if gradient is None else [gradient]):
      reg_gradient = tf.gradients(reg_total, [variable], grad_ys=tf.ones_like(reg_total))[0]
    if reg_gradient is not None:
      gradient = reg_gradient if gradient is None else tf.add_n([gradient, reg_gradient])
    gradients.append((gradient, variable))
  return gradients


def build_training_graph(config, files, devices):
  """The input pipeline, the model on each tower device, the loss and the train op.

  Towers share variables (scope `tower` reused); each gets 1/len(devices) of the batch
  of batch_size * towers examples; gradients are averaged over towers, then each gradient
  tensor is clipped to --clip_gradient_norm. The matmuls run in --compute_dtype (float16 with
  DynamicLossScale). Returns a dict of the tensors to run.
  """
  towers = len(devices)
  compute_dtype = fp16_layers.compute_dtype()
  loss_scale = DynamicLossScale() if compute_dtype == tf.float16 else None
  global_step = model_graph.create_global_step()
  if FLAGS.batch_norm_warmup:
    tf1.add_to_collection(fp16_layers.BATCH_NORM_WARMUP_STEP, global_step)
  with tf.device("/cpu:0"), tf1.name_scope("train_input"):
    dataset = config.make_reader().dataset(
        files, FLAGS.batch_size * towers, num_epochs=FLAGS.num_epochs, shuffle=True,
        num_readers=FLAGS.num_readers, seed=FLAGS.random_seed)
    if towers > 1:  # every tower needs at least one example
      dataset = dataset.filter(lambda batch: tf.shape(batch["labels"])[0] >= towers)
    iterator = tf1.data.make_initializable_iterator(dataset)
    batch = iterator.get_next()

  learning_rate = tf1.train.exponential_decay(
      FLAGS.base_learning_rate, tf.cast(global_step, tf.float32) * FLAGS.batch_size * towers,
      FLAGS.learning_rate_decay_examples, FLAGS.learning_rate_decay, staircase=True)
  optimizer = getattr(tf1.train, FLAGS.optimizer)(learning_rate)
  loss_fn = losses.get_loss(config.label_loss)
  tower_gradients, tower_predictions, tower_losses, tower_inputs = [], [], [], []
  reg_loss = None
  for index, (device, part) in enumerate(zip(devices, split_batch(batch, towers))):
    with tf.device(device), tf1.name_scope("tower_%d" % index) as scope:
      predictions, model_input = model_graph.build_model(
          config, part["video_matrix"], part["num_frames"], is_training=True,
          reuse=True if index else None, compute_dtype=compute_dtype)
      label_loss = loss_fn.calculate_loss(predictions, part["labels"])
      if reg_loss is None:  # regularizers are registered once, by the first tower
        regularization_losses = tf1.get_collection(tf1.GraphKeys.REGULARIZATION_LOSSES)
        reg_loss = (tf.add_n(regularization_losses) if regularization_losses
                    else tf.constant(0.0))
      with tf.control_dependencies(tf1.get_collection(tf1.GraphKeys.UPDATE_OPS, scope)):
        label_loss = tf.identity(label_loss, name="label_loss")
      trainable = tf1.trainable_variables()
      frozen = [v for v in trainable if v.dtype.base_dtype == tf.float16]
      if frozen and index == 0:
        # Adam's epsilon (1e-8) underflows in float16 and turns the kernels into NaN; the
        # float16 kernels of packed ensembles are filled from float32 models afterwards.
        logging.warning("--float16_flag: %d float16 kernels are not updated by training",
                        len(frozen))
      tower_gradients.append(loss_gradients(
          optimizer, label_loss, reg_loss, loss_scale,
          [v for v in trainable if v.dtype.base_dtype != tf.float16]))
      tower_predictions.append(predictions)
      tower_losses.append(label_loss)
      tower_inputs.append(model_input)

  gradients = average_gradients(tower_gradients)
  if loss_scale:
    gradients = loss_scale.unscale(gradients)
  if FLAGS.clip_gradient_norm > 0:
    gradients = [(clip_by_norm(g, FLAGS.clip_gradient_norm), v) for g, v in gradients]
  if loss_scale:
    train_op = loss_scale.apply_if_finite(optimizer, gradients, global_step)
  else:
    train_op = optimizer.apply_gradients(gradients, global_step=global_step)
  with tf.control_dependencies([train_op]):
    step_after = tf.identity(global_step.read_value(), name="global_step_after")
  label_loss = tf.add_n(tower_losses) / float(towers)
  predictions = tf.concat(tower_predictions, 0) if towers > 1 else tower_predictions[0]
  model_input = tf.concat(tower_inputs, 0) if towers > 1 else tower_inputs[0]
  for name, tensor in (("global_step", global_step), ("loss", label_loss),
                       ("predictions", predictions), ("input_batch_raw", batch["video_matrix"]),
                       ("input_batch", model_input), ("num_frames", batch["num_frames"]),
                       ("labels", tf.cast(batch["labels"], tf.float32)),
                       ("train_op", train_op)):
    tf1.add_to_collection(name, tensor)
  # Checked before each export: a diverged model is never saved.
  weights_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                                  for v in tf1.global_variables() if v.dtype.is_floating])
  return {"global_step": global_step, "step_after": step_after, "label_loss": label_loss,
          "batch_examples": tf.shape(batch["labels"])[0],
          "weights_finite": weights_finite, "loss_scale": loss_scale,
          "reg_loss": reg_loss, "learning_rate": learning_rate, "predictions": predictions,
          "labels": batch["labels"], "iterator": iterator}


def restore_or_initialize(sess, saver, graph_vars, synced):
  """Restores the newest model.ckpt-<step> of synced.remote that can be read (a truncated or
  corrupt newer one is skipped, with a warning), or warm-starts from --checkpoint_file
  (variables it lacks start fresh), else initializes."""
  found = checkpoint_utils.list_checkpoints(synced.remote)
  if FLAGS.checkpoint_file:
    prefix = checkpoint_utils.existing_checkpoint(FLAGS.train_dir, FLAGS.checkpoint_file)
    if found:
      raise ValueError("--checkpoint_file=%s: %s already holds training checkpoints (newest "
                       "%s); warm-starting would mix two runs. Use an empty --train_dir."
                       % (FLAGS.checkpoint_file, synced.remote, found[-1][1]))
    warm_start(sess, graph_vars, prefix)
    return
  if not found:
    sess.run(tf1.global_variables_initializer())
    logging.info("No checkpoint in %s: starting a new model", synced.remote)
    return
  skipped = []
  for step, prefix in reversed(found):
    name = os.path.basename(prefix)
    synced.pull([name + ".*"])
    local_prefix = synced.local_path(name)
    try:
      checkpoint_utils.check_matches_graph(local_prefix, graph_vars, "of these flags",
                                           name=prefix)
      with checkpoint_utils.reading(prefix, local_prefix):
        saver.restore(sess, local_prefix)
    except checkpoint_utils.UnreadableCheckpointError as error:
      logging.warning("Skipping %s: %s", prefix, error)
      skipped.append(name)
      continue
    except ValueError as error:
      raise ValueError("Cannot resume: %s. Use --start_new_model or another --train_dir."
                       % error)
    logging.info("Resumed from %s (step %d)%s", prefix, step, " instead of the unreadable %s"
                 % ", ".join(skipped) if skipped else "")
    return
  raise IOError("Cannot resume: no checkpoint in %s can be read (%s; see the warnings "
                "above). Use --start_new_model or another --train_dir."
                % (synced.remote, ", ".join(skipped)))


def warm_start(sess, graph_vars, prefix):
  """Initializes, then restores the variables checkpoint prefix holds."""
  with checkpoint_utils.local_copy(prefix) as local_prefix:
    checkpoint_utils.check_matches_graph(local_prefix, graph_vars, "of --checkpoint_file",
                                         name=prefix, allow_missing=True)
    with checkpoint_utils.reading(prefix, local_prefix):
      stored = tf.train.load_checkpoint(local_prefix).get_variable_to_shape_map()
      present = [v for v in graph_vars if v.op.name in stored]
      sess.run(tf1.global_variables_initializer())
      tf1.train.Saver(present).restore(sess, local_prefix)
  logging.info("Warm start from %s: restored %d variables, %d start fresh", prefix,
               len(present), len(graph_vars) - len(present))


def train(config, task):
  """Trains on this process's share; the chief alone writes model_flags.json, checkpoints
  and summaries. Returns the last global step."""
  train_dir = FLAGS.train_dir
  # Before anything is started or written: a GPU machine whose GPUs TensorFlow cannot use
  # stops here instead of training on its CPUs (parameter servers use no tower).
  devices = tower_devices() if task.task_type != "ps" else None
  server = None
  if task.distributed:
    server = tf1.train.Server(tf.train.ClusterSpec(task.cluster), job_name=task.task_type,
                              task_index=task.task_index)
    if task.task_type == "ps":
      run_parameter_server(task, server)
      return None
  files = readers.training_files(FLAGS.train_data_pattern)
  if task.distributed and len(files) >= len(task.trainers):
    files = files[task.trainer_index::len(task.trainers)]  # each trainer its own files
  synced = None
  if task.is_chief:
    if FLAGS.start_new_model:
      remove_training_artifacts(train_dir)
    # TF writes locally; for a gs:// train_dir, a local mirror holds what is needed to resume
    # and every new file is uploaded after each export.
    checkpoint_utils.remove_interrupted_saves(train_dir)
    synced = staging.SyncedDir(train_dir)
    synced.pull([utils.MODEL_FLAGS_FILE])
    train_dir = synced.local
    record_model_flags(train_dir, config)
    synced.push([utils.MODEL_FLAGS_FILE])
  logging.info("Training %s on %d files, batch %d x %d tower(s), into %s%s", config.describe(),
               len(files), FLAGS.batch_size, len(devices), train_dir,
               " as %s (%d trainers, %d ps)" % (task.device, len(task.trainers), task.num_ps)
               if task.distributed else "")
  # The records of this process's files: the epoch of the progress line (--num_epochs).
  epoch_examples = progress_lib.count_inputs("training", files)

  graph = tf.Graph()
  with graph.as_default():
    if FLAGS.random_seed is not None:
      tf1.set_random_seed(FLAGS.random_seed)
    if task.distributed:
      with tf1.device(tf1.train.replica_device_setter(
          ps_tasks=task.num_ps, worker_device=task.device,
          cluster=tf.train.ClusterSpec(task.cluster))):
        tensors = build_training_graph(config, files, devices)
      signal_done = [queue.enqueue(1) for queue in done_queues(task)]
      if not task.is_chief:
        ready_op = tf1.report_uninitialized_variables(tf1.global_variables())
    else:
      tensors = build_training_graph(config, files, devices)
    graph_vars = tf1.global_variables()
    # Relative paths in the `checkpoint` state file: it stays valid when a gs:// train_dir
    # is worked on through a local mirror (and when a directory is copied or moved).
    saver = tf1.train.Saver(graph_vars, max_to_keep=None, save_relative_paths=True)
    local_init = tf1.local_variables_initializer()  # DynamicLossScale's, never saved
    logging.info("%d variables, %d trainable parameters", len(graph_vars),
                 sum(int(np.prod(v.shape.as_list())) for v in tf1.trainable_variables()))
  session_config = tf1.ConfigProto(allow_soft_placement=True,
                                   log_device_placement=FLAGS.log_device_placement)
  # Grappler's constant folding turns each optimizer slot's zeros initializer into a Const
  # whose tensor the session keeps: the slots start as that one buffer, so the first update
  # copies them and the Const's copy stays, one dead tensor per slot (~300 MiB at the seed's
  # size) for the whole run. Measured: the step's speed does not depend on it.
  session_config.graph_options.rewrite_options.constant_folding = (
      rewriter_config_pb2.RewriterConfig.OFF)
  if FLAGS.cpu_towers:
    session_config.device_count["CPU"] = len(devices)
  if task.distributed:
    session_config.device_filters.extend(["/job:ps", task.device])
  stop = StopRequest()
  # Also into AIP_TENSORBOARD_LOG_DIR when Vertex AI sets it (a TensorBoard instance reads there).
  writer = summaries.SummaryWriter(train_dir, graph=graph) if task.is_chief else None
  target = server.target if server else ""
  with graph.as_default():
    if task.is_chief:
      sess = tf1.Session(target, graph=graph, config=session_config)
      restore_or_initialize(sess, saver, graph_vars, synced)
    else:  # workers wait until the chief has initialized or restored the variables
      sess = tf1.train.SessionManager(ready_op=ready_op, graph=graph,
                                      recovery_wait_secs=1).wait_for_session(
                                          target, config=session_config)
    sess.run(local_init)
    try:
      step = train_loop(sess, tensors, saver, writer, task, files, stop, train_dir, synced,
                        epoch_examples)
      if writer:
        writer.flush()
      return step
    finally:
      if writer:
        with contextlib.suppress(RuntimeError):  # a failed event write was raised above
          writer.close()
      if synced:
        synced.push_new()
      if task.distributed:
        sess.run(signal_done)
      sess.close()


def train_loop(sess, tensors, saver, writer, task, files, stop, train_dir, synced,
               epoch_examples=(None, False)):
  """Runs training steps until the input ends, --max_steps or a stop signal; the chief logs
  metrics every 10 steps and exports checkpoints; every process logs its progress (step of
  --max_steps or epoch of --num_epochs, examples/sec, ETA). epoch_examples: (records of
  files or None, exact). Returns the last global step."""
  sess.run(tensors["iterator"].initializer)
  step = first_step = int(sess.run(tensors["global_step"]))
  progress = progress_lib.TrainingProgress(first_step, FLAGS.max_steps, epoch_examples[0],
                                           FLAGS.num_epochs, approximate=not epoch_examples[1])
  resumed = checkpoint_utils.newest_checkpoint(train_dir) is not None
  # Step exports at 10, 10+E, ...; the --save_model_secs timer exports whatever they do.
  last = {"cadence": step if resumed else None, "saved": step if resumed else None,
          "timer": time.time(), "events": time.time()}

  def diverged(what):
    if last["saved"] is None:
      good = "no checkpoint was exported before; start again"
    else:
      good = "the last good checkpoint is %s/%s-%d; resume from it" % (
          FLAGS.train_dir.rstrip("/"), checkpoint_utils.TRAIN_CHECKPOINT_BASENAME, last["saved"])
    return TrainingDiverged("training diverged at step %d: %s, not exported; %s with a lower "
                            "--base_learning_rate or --clip_gradient_norm" % (step, what, good))

  def export(step_to_save):
    if not sess.run(tensors["weights_finite"]):
      raise diverged("the weights hold NaN or inf")
    prefix = os.path.join(train_dir, checkpoint_utils.TRAIN_CHECKPOINT_BASENAME)
    with checkpoint_utils.writing("%s-%d" % (prefix, step_to_save)):
      path = saver.save(sess, prefix, global_step=step_to_save)
    if synced:
      writer.flush()
      synced.push_new()
    logging.info("Exported %s", path)
    last["saved"] = step_to_save

  reason = "max_steps reached"
  try:
    while FLAGS.max_steps is None or step < FLAGS.max_steps:
      if stop.signal_name:
        reason = "stopped by %s" % stop.signal_name
        break
      with_metrics = task.is_chief and (step + 1) % 10 == 0
      fetches = {"step": tensors["step_after"], "loss": tensors["label_loss"],
                 "examples": tensors["batch_examples"]}
      if with_metrics:
        fetches.update(predictions=tensors["predictions"], labels=tensors["labels"],
                       reg_loss=tensors["reg_loss"], learning_rate=tensors["learning_rate"])
        if tensors["loss_scale"]:
          fetches["loss_scale"] = tensors["loss_scale"].scale
      start = time.time()
      result = sess.run(fetches)
      examples_per_sec = result["examples"] / (time.time() - start)
      step = int(result["step"])
      progress.update(step, int(result["examples"]))
      if not np.isfinite(result["loss"]):
        raise diverged("the loss is %s" % result["loss"])
      if step % 10 == 0 and with_metrics:
        predictions, labels = result["predictions"], result["labels"]
        hit_at_one = eval_util.calculate_hit_at_one(predictions, labels)
        perr = eval_util.calculate_precision_at_equal_recall_rate(predictions, labels)
        gap = eval_util.calculate_gap(predictions, labels)
        logging.info("training step %d | Loss: %.2f Examples/sec: %.2f | Hit@1: %.2f "
                     "PERR: %.2f GAP: %.2f", step, result["loss"], examples_per_sec,
                     hit_at_one, perr, gap)
        scalars = {"model/Training_Hit@1": hit_at_one, "model/Training_Perr": perr,
                   "model/Training_GAP": gap, "global_step/Examples/Second": examples_per_sec,
                   "label_loss": result["loss"], "reg_loss": result["reg_loss"],
                   "learning_rate": result["learning_rate"]}
        if "loss_scale" in result:
          scalars["loss_scale"] = result["loss_scale"]
        writer.add_summary(tf1.Summary(value=[
            tf1.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in scalars.items()]), step)
        if last["cadence"] is None or step - last["cadence"] >= FLAGS.export_model_steps:
          export(step)
          last["cadence"] = step
      else:
        logging.info("training step %d | Loss: %.2f Examples/sec: %.2f", step,
                     result["loss"], examples_per_sec)
      if (task.is_chief and FLAGS.save_model_secs
          and time.time() - last["timer"] >= FLAGS.save_model_secs):
        export(step)
        last["timer"] = time.time()
      if synced and time.time() - last["events"] >= EVENT_UPLOAD_SECS:
        writer.flush()
        synced.push(["events.out.tfevents.*"])
        last["events"] = time.time()
  except tf.errors.OutOfRangeError:
    if step == first_step:  # a run reads its files from the start: they are empty
      share = " of %s" % task.device if task.distributed else ""
      raise readers.InputDataError(
          "--train_data_pattern: the %d training file(s)%s hold no videos: nothing to train "
          "on" % (len(files), share))
    reason = "Done training -- epoch limit reached."
  except readers.INPUT_ERRORS as error:
    if task.is_chief and last["saved"] != step and step > 0:
      export(step)
    raise readers.InputDataError(readers.input_error_message(error, files))
  logging.info("%s (step %d)", reason, step)
  progress.finish()
  if task.is_chief and step > 0 and last["saved"] != step:
    export(step)
  return step


@utils.tool_main
def main(unused_argv):
  check_flags()
  task = cluster_task()
  config = model_graph.config_from_flags()
  with storage.event_file_errors():
    train(config, task)


if __name__ == "__main__":
  app.run(main)
