"""Trains a (Gated NetVLAD ensemble) video classifier on YouTube-8M TFRecords.

    python -m youtube-8m.train --train_data_pattern='TRAIN_GLOB,VALIDATE_GLOB' \
        --train_dir=DIR --frame_features --feature_names='rgb,audio' \
        --feature_sizes='1024,128' --netvlad_cluster_size=32 --netvlad_hidden_size=512 ...

Checkpoints ``DIR/model.ckpt-<step>`` are exported at steps 10, 10+E, 10+2E, ... (E =
--export_model_steps), every --save_model_secs, and when training ends or is interrupted
(SIGTERM/SIGINT: exit status 0; a second signal stops at once). Running the same command
again resumes from the newest model.ckpt-<step> (weights, optimizer state and global_step);
a changed architecture is refused.
"""

import contextlib
import os

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging
from tensorflow.core.protobuf import rewriter_config_pb2

from . import checkpoint_utils
from . import cluster
from . import fp16_layers
from . import gpu_check
from . import interrupts
from . import model_graph
from . import optimization
from . import progress as progress_lib
from . import readers
from . import staging
from . import storage
from . import summaries
from . import training_graph
from . import training_loop
from . import utils

tf1 = tf.compat.v1
FLAGS = flags.FLAGS

# Hyper-parameters recorded in model_flags.json["training"] (informational).
TRAINING_FLAGS = ("batch_norm_warmup", "batch_size", "base_learning_rate", "learning_rate_decay",
                  "learning_rate_decay_examples", "regularization_penalty", "optimizer",
                  "clip_gradient_norm", "num_epochs", "max_steps", "export_model_steps",
                  "compute_dtype")


def define_flags():
  utils.define_shared_flags(__name__, model_graph.define_flags,
                            fp16_layers.define_compute_dtype_flag, gpu_check.define_device_flag)
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
                    "Delete this train_dir's checkpoints, events, model_flags.json and "
                    "eval_state.json and start over (other files in train_dir are kept).")
  flags.DEFINE_integer("num_gpu", 1,
                       "Maximum number of GPUs (towers) to use; the batch is batch_size x towers.")
  flags.DEFINE_bool("cpu_towers", False,
                    "Use --num_gpu CPU devices as the towers (multi-tower training on a machine "
                    "without GPUs).")
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


def check_flags():
  for name in ("batch_size", "export_model_steps", "num_epochs", "max_steps"):
    if FLAGS[name].value is not None and FLAGS[name].value < 1:
      raise ValueError("--%s must be >= 1, got %d" % (name, FLAGS[name].value))
  if FLAGS.optimizer not in optimization.OPTIMIZERS:
    raise ValueError("--optimizer=%r is not one of %s" % (FLAGS.optimizer,
                                                          ", ".join(optimization.OPTIMIZERS)))
  if FLAGS.learning_rate_decay_examples <= 0:
    raise ValueError("--learning_rate_decay_examples must be > 0")
  if not FLAGS.train_data_pattern:
    raise ValueError("--train_data_pattern is required")


def remove_training_artifacts(train_dir):
  """--start_new_model: delete what train.py wrote (not the whole directory)."""
  if not storage.isdir(train_dir):
    return
  removed = [name for name in map(lambda n: n.rstrip("/"), storage.listdir(train_dir))
             if name.startswith((checkpoint_utils.TRAIN_CHECKPOINT_BASENAME + "-",
                                 "events.out.tfevents"))
             or name in ("checkpoint", utils.MODEL_FLAGS_FILE, utils.EVAL_STATE_FILE)]
  for name in removed:
    storage.remove(os.path.join(train_dir, name))
  logging.info("--start_new_model: removed %d files of the previous run in %s", len(removed),
               train_dir)


def restore_or_initialize(sess, saver, graph_vars, synced):
  """Restores the newest readable model.ckpt-<step> of synced.remote (skipping unreadable
  newer ones, with a warning), or warm-starts from --checkpoint_file, else initializes."""
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
  # The towers: min(--num_gpu, GPUs) GPUs, else one CPU; with --cpu_towers, --num_gpu CPUs.
  # First: a GPU machine whose GPUs TensorFlow cannot use stops here, before any output.
  devices = None
  if task.task_type != "ps":  # parameter servers use no tower
    if FLAGS.num_gpu < 0:
      raise ValueError("--num_gpu must be >= 0, got %d" % FLAGS.num_gpu)
    devices = gpu_check.model_devices(FLAGS.allow_cpu_on_gpu_machine, FLAGS.num_gpu,
                                      max(FLAGS.num_gpu, 1) if FLAGS.cpu_towers else 0)
  server = None
  if task.distributed:
    server = tf1.train.Server(tf.train.ClusterSpec(task.cluster), job_name=task.task_type,
                              task_index=task.task_index)
    if task.task_type == "ps":
      with interrupts.immediate():  # nothing to save: a signal stops it at once
        cluster.run_parameter_server(task, server)
      return None
  files = readers.training_files(FLAGS.train_data_pattern)
  if task.distributed and len(files) >= len(task.trainers):
    files = files[task.trainer_index::len(task.trainers)]  # each trainer its own files
  synced, train_dir = prepare_train_dir(config) if task.is_chief else (None, FLAGS.train_dir)
  logging.info("Training %s on %d files, batch %d x %d tower(s), into %s%s", config.describe(),
               len(files), FLAGS.batch_size, len(devices), train_dir,
               " as %s (%d trainers, %d ps)" % (task.device, len(task.trainers), task.num_ps)
               if task.distributed else "")
  # The records of this process's files: the epoch of the progress line (--num_epochs).
  epoch_examples = progress_lib.count_inputs("training", files)
  graph, tensors, saver, ready_op, signal_done = build_graph(config, files, devices, task)
  # Also into AIP_TENSORBOARD_LOG_DIR when Vertex AI sets it (a TensorBoard instance reads there).
  writer = summaries.SummaryWriter(train_dir, graph=graph) if task.is_chief else None
  with graph.as_default():
    sess = open_session(graph, saver, task, server, ready_op, synced, len(devices))
    sess.run(tensors["local_init"])
    try:
      step = training_loop.train_loop(sess, tensors, saver, writer, task, files, train_dir,
                                      synced, epoch_examples)
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


def prepare_train_dir(config):
  """The chief's (synced, local train_dir): --start_new_model done, model_flags.json written,
  or checked against the architecture. TF writes locally: a gs:// train_dir is worked on
  through a mirror."""
  if FLAGS.start_new_model:
    remove_training_artifacts(FLAGS.train_dir)
  checkpoint_utils.remove_interrupted_saves(FLAGS.train_dir)
  synced = staging.SyncedDir(FLAGS.train_dir)
  synced.pull([utils.MODEL_FLAGS_FILE])
  stored = model_graph.read_stored_flags(synced.local, required=False)
  if stored is not None:
    model_graph.check_same_architecture(stored, config, utils.model_flags_path(synced.local))
  model_flags = config.to_json_dict()
  model_flags[model_graph.TRAINING_KEY] = {name: FLAGS[name].value for name in TRAINING_FLAGS}
  utils.write_model_flags(synced.local, model_flags)
  synced.push([utils.MODEL_FLAGS_FILE])
  return synced, synced.local


def build_graph(config, files, devices, task):
  """(graph, tensors, saver, ready_op, signal_done): the training graph, its saver and, in a
  distributed job, what a worker waits for and the ops telling the parameter servers it is
  done."""
  graph = tf.Graph()
  ready_op = signal_done = None
  with graph.as_default():
    if FLAGS.random_seed is not None:
      tf1.set_random_seed(FLAGS.random_seed)
    placement = contextlib.nullcontext() if not task.distributed else tf1.device(
        tf1.train.replica_device_setter(ps_tasks=task.num_ps, worker_device=task.device,
                                        cluster=tf.train.ClusterSpec(task.cluster)))
    with placement:
      tensors = training_graph.build_training_graph(config, files, devices)
    if task.distributed:
      signal_done = [queue.enqueue(1) for queue in cluster.done_queues(task)]
      if not task.is_chief:
        ready_op = tf1.report_uninitialized_variables(tf1.global_variables())
    graph_vars = tf1.global_variables()
    # Relative paths in the `checkpoint` state file: it stays valid when a gs:// train_dir
    # is worked on through a local mirror (and when a directory is copied or moved).
    saver = tf1.train.Saver(graph_vars, max_to_keep=None, save_relative_paths=True)
    tensors["local_init"] = tf1.local_variables_initializer()  # DynamicLossScale's, never saved
    logging.info("%d variables, %d trainable parameters", len(graph_vars),
                 sum(int(np.prod(v.shape.as_list())) for v in tf1.trainable_variables()))
  return graph, tensors, saver, ready_op, signal_done


def open_session(graph, saver, task, server, ready_op, synced, num_devices):
  """The session, its variables restored or initialized by the chief (workers wait until the
  chief has done so)."""
  config = tf1.ConfigProto(allow_soft_placement=True,
                           log_device_placement=FLAGS.log_device_placement)
  # Grappler's constant folding would make each optimizer slot's zeros initializer a Const
  # that the session keeps for the whole run, a dead copy of every slot.
  config.graph_options.rewrite_options.constant_folding = rewriter_config_pb2.RewriterConfig.OFF
  if FLAGS.cpu_towers:
    config.device_count["CPU"] = num_devices
  if task.distributed:
    config.device_filters.extend(["/job:ps", task.device])
  target = server.target if server else ""
  if task.is_chief:
    sess = tf1.Session(target, graph=graph, config=config)
    restore_or_initialize(sess, saver, tf1.global_variables(), synced)
    return sess
  with interrupts.immediate():  # waiting for the chief: nothing to save yet
    return tf1.train.SessionManager(ready_op=ready_op, graph=graph, recovery_wait_secs=1
                                    ).wait_for_session(target, config=config)


@utils.tool_main
def main(unused_argv):
  check_flags()
  # Stopped by SIGTERM/SIGINT (a Spot VM's preemption), it exports the step and exits 0: the
  # same command resumes from that checkpoint.
  interrupts.set_resumable()
  task = cluster.cluster_task()
  config = model_graph.config_from_flags()
  with storage.event_file_errors():
    train(config, task)


if __name__ == "__main__":
  define_flags()
  app.run(main)
