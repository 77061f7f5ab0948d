"""Writes a Kaggle submission CSV (VideoId,LabelConfidencePairs) from an inference model.

    python -m youtube-8m.inference --input_model_tgz=SUB.tgz \
        --input_data_pattern='.../test*.tfrecord' --output_file=sub.csv --batch_size=512
    python -m youtube-8m.inference --train_dir=DIR [--inference_model_file=inference_model] ...

The model is the meta graph + checkpoint ``<inference_model_file>`` (as written by eval.py)
with model_flags.json next to it, from --train_dir or from a submission tgz; with
--compute_dtype=bfloat16|float16 the model is rebuilt from model_flags.json instead (the meta
graph computes in float32) and the checkpoint restored into it. The CSV is written under a
temporary name and renamed when complete. --output_model_tgz packs the
model files and model_flags.json (at the archive root) into a submission tgz. Stopped by
SIGTERM/SIGINT (exit status 143/130), it removes its temporary files and writes nothing
incomplete; the same command writes everything again.
"""

import contextlib
import os
import shutil
import tarfile
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging
from google.protobuf import message

from . import checkpoint_utils
from . import dataset_layout
from . import fp16_layers
from . import gpu_check
from . import interrupts
from . import model_graph
from . import model_utils
from . import progress as progress_lib
from . import readers
from . import staging
from . import storage
from . import utils

tf1 = tf.compat.v1
FLAGS = flags.FLAGS


def define_flags():
  utils.define_shared_flags(__name__, fp16_layers.define_compute_dtype_flag,
                            gpu_check.define_device_flag)
  flags.DEFINE_string("train_dir", "",
                      "Directory with <inference_model_file>.{meta,index,data-*} and "
                      "model_flags.json. Leave empty with --input_model_tgz.")
  flags.DEFINE_string("inference_model_file", "inference_model",
                      "Checkpoint prefix of the inference model inside train_dir / the tgz.")
  flags.DEFINE_string("input_data_pattern", "", "Glob of the TFRecords to predict.")
  flags.DEFINE_string("input_model_tgz", "", "Submission tgz holding the inference model.")
  flags.DEFINE_string("untar_model_dir", "/tmp/yt8m-model",
                      "Where --input_model_tgz is extracted (into a fresh subdirectory).")
  flags.DEFINE_string("output_file", "", "The CSV file to write.")
  flags.DEFINE_string("output_model_tgz", "",
                      "If set, also write the inference model + model_flags.json as this tgz.")
  flags.DEFINE_integer("top_k", 20, "Labels (with scores) per video in the CSV.")
  flags.DEFINE_integer("batch_size", 512, "Videos per inference batch.")
  flags.DEFINE_integer("num_readers", 1,
                       "Files read in parallel; 1 keeps the CSV rows in file order.")


CSV_HEADER = "VideoId,LabelConfidencePairs\n"


def format_row(video_id, scores, top_k):
  """'<id>,<label> <score> ...' with the top_k labels by descending score (%i %g)."""
  top_k = min(top_k, len(scores))
  top = np.argpartition(scores, -top_k)[-top_k:]
  top = top[np.argsort(-scores[top], kind="stable")]
  pairs = " ".join("%i %g" % (label, scores[label]) for label in top)
  return "%s,%s\n" % (video_id, pairs)


def csv_video_id(video_id, files):
  """The bytes video_id as CSV text; InputDataError naming its record if it is not UTF-8 or
  holds a comma or a line break."""
  try:
    text = video_id.decode("utf-8")
    if not any(separator in text for separator in ",\r\n"):
      return text
    problem = "holds a comma or a line break"
  except UnicodeDecodeError:
    problem = "is not UTF-8"
  raise readers.InputDataError("%s: video id %r %s" % (
      readers.find_video(files, video_id) or "--input_data_pattern", video_id, problem))


@contextlib.contextmanager
def extracted_model_tgz(tgz_path, untar_model_dir):
  """The directory of the model files of the tgz, extracted into a fresh subdirectory of
  untar_model_dir that is removed afterwards."""
  if not storage.exists(tgz_path):
    raise IOError("--input_model_tgz: %s does not exist" % tgz_path)
  directory = storage.temp_dir("model", untar_model_dir)
  try:
    with open(storage.stage_file(tgz_path), "rb") as handle, utils.reading_tgz(
        "--input_model_tgz " + tgz_path, handle) as archive:
      archive.extractall(directory, filter="data")  # refuses members outside directory
    model_dirs = [root for root, _, names in os.walk(directory)
                  if utils.MODEL_FLAGS_FILE in names]
    if not model_dirs:
      raise IOError("--input_model_tgz %s holds no %s" % (tgz_path, utils.MODEL_FLAGS_FILE))
    yield model_dirs[0]
  finally:
    shutil.rmtree(directory, ignore_errors=True)


def model_files(train_dir, model_name):
  """The checkpoint files of train_dir/model_name, checked to be complete."""
  prefix = os.path.join(train_dir, model_name)
  missing = [suffix for suffix in (".meta", ".index") if not storage.exists(prefix + suffix)]
  data = storage.glob(prefix + ".data-*")
  if missing or not data:
    others = sorted({os.path.basename(p).split(".")[0] for p in
                     storage.glob(os.path.join(train_dir, "inference_model*.meta"))})
    raise IOError("Inference model %s is incomplete (missing %s). Did you run eval.py? "
                  "Inference models found in %s: %s" % (
                      prefix, ", ".join(missing + ([] if data else [".data-*"])), train_dir,
                      ", ".join(others) or "none"))
  return prefix, [prefix + ".meta", prefix + ".index"] + sorted(data)


def write_model_tgz(output_tgz, prefix, files):
  """A gzip tar with each file at the archive root (the submission layout).

  Checkpoint files of ``prefix`` are stored as inference_model.* whatever their name here
  (the name the competition's inference.py loads; the meta graph does not depend on it).
  """
  with storage.local_output(output_tgz) as tmp:
    with tarfile.open(tmp, mode="w:gz") as archive:
      for path in files:
        name = os.path.basename(path)
        if path.startswith(prefix + "."):
          name = "inference_model" + path[len(prefix):]
        archive.add(path, arcname=name)
  logging.info("Wrote %s", output_tgz)


def rebuild_model(train_dir, prefix, batch, compute_dtype):
  """(saver, predictions): the model of train_dir/model_flags.json on the reader's batch, its
  matmuls in compute_dtype; the saver restores prefix into it."""
  stored = model_graph.read_stored_flags(train_dir)
  if not set(stored) - set(model_graph.ORIGINAL_KEYS):
    raise ValueError("--compute_dtype=%s rebuilds the model from %s, but the original code "
                     "wrote it without the architecture; use --compute_dtype=float32"
                     % (FLAGS.compute_dtype, utils.model_flags_path(train_dir)))
  config = model_graph.ModelConfig.from_dict(stored).validate()
  model_graph.create_global_step()
  predictions, _ = model_graph.build_model(config, batch["video_matrix"], batch["num_frames"],
                                           is_training=False, compute_dtype=compute_dtype)
  checkpoint_utils.check_matches_graph(prefix, tf1.global_variables(), config.describe())
  return tf1.train.Saver(tf1.global_variables()), predictions


def import_model(prefix, batch, num_classes=None):
  """(saver, predictions) of the meta graph prefix.meta imported onto the reader's tensors
  (no feed copies), checked against the reader, num_classes (if known) and the checkpoint
  prefix."""
  meta_graph_def = tf1.MetaGraphDef()
  try:
    meta_graph_def.ParseFromString(storage.read_bytes(prefix + ".meta"))
  except message.DecodeError as error:
    raise ValueError("%s.meta is not a meta graph (truncated or corrupt?): %s" % (prefix, error))
  input_map = {}
  for key, tensor in (("input_batch_raw", batch["video_matrix"]),
                      ("num_frames", batch["num_frames"])):
    names = meta_graph_def.collection_def[key].node_list.value
    if not names:
      raise ValueError("The inference meta graph %s.meta has no %r collection" % (prefix, key))
    input_map[names[0]] = tensor
  try:
    saver = tf1.train.import_meta_graph(meta_graph_def, clear_devices=True, input_map=input_map)
  except ValueError as error:  # e.g. another input shape than the reader's
    raise ValueError("%s.meta does not fit the input of model_flags.json: %s"
                     % (prefix, utils.one_line(str(error))))
  predictions = tf1.get_collection("predictions")
  if not saver or not predictions:
    raise ValueError("The inference meta graph %s.meta has no %s" % (
        prefix, "variables" if not saver else "'predictions' collection"))
  if num_classes and predictions[0].shape[-1] != num_classes:
    raise ValueError("%s.meta predicts %s classes, model_flags.json says num_classes=%d"
                     % (prefix, predictions[0].shape[-1], num_classes))
  checkpoint_utils.check_matches_graph(prefix, tf1.global_variables(), "of %s.meta" % prefix)
  return saver, predictions[0]


def predict(train_dir, model_name, files, output_file):
  model_flags = model_graph.read_model_flags(train_dir)
  try:
    feature_names, feature_sizes = utils.parse_feature_flags(model_flags["feature_names"],
                                                             model_flags["feature_sizes"])
  except ValueError as error:
    raise ValueError("%s: %s" % (utils.model_flags_path(train_dir), error))
  num_classes = model_flags.get("num_classes")  # not in the original's json
  reader = readers.make_reader(model_flags["frame_features"], feature_names, feature_sizes,
                               num_classes or dataset_layout.NUM_CLASSES)
  prefix, _ = model_files(train_dir, model_name)

  graph = tf.Graph()
  with graph.as_default():
    iterator, batch = readers.one_pass(reader, files, FLAGS.batch_size, FLAGS.num_readers,
                                       "inference_input")
    compute_dtype = fp16_layers.compute_dtype()
    if compute_dtype != tf.float32:
      saver, predictions = rebuild_model(train_dir, prefix, batch, compute_dtype)
    else:
      video_matrix = batch["video_matrix"]
      if video_matrix.dtype == tf.uint8:  # the float32 features the (original's) graph takes
        video_matrix = model_utils.dequantize_frames(
            video_matrix, tf.sequence_mask(batch["num_frames"], tf.shape(video_matrix)[1]))
      saver, predictions = import_model(
          prefix, {"video_matrix": video_matrix, "num_frames": batch["num_frames"]}, num_classes)

  count = 0
  start = time.time()
  progress = progress_lib.input_progress("inference", files)
  with storage.local_output(output_file) as tmp_output:
    with tf1.Session(graph=graph) as sess, open(tmp_output, "w") as out:
      try:
        saver.restore(sess, prefix)
      except tf.errors.OpError as error:
        raise ValueError("Cannot restore the inference model %s: %s"
                         % (prefix, utils.one_line(error.message)))
      sess.run([tf1.local_variables_initializer(), iterator.initializer])
      out.write(CSV_HEADER)
      fetches = {"video_ids": batch["video_id"], "scores": predictions}
      for result in readers.run_batches(sess, fetches, files, progress, count_key="video_ids"):
        video_ids, scores = result["video_ids"], result["scores"]
        out.write("".join(format_row(csv_video_id(video_id, files), row, FLAGS.top_k)
                          for video_id, row in zip(video_ids, scores)))
        count += len(video_ids)
        elapsed = time.time() - start
        logging.info("num examples processed: %d elapsed seconds: %.2f (%.1f videos/sec)",
                     count, elapsed, count / max(elapsed, 1e-9))
      if not count:
        raise IOError("--input_data_pattern: the %d file(s) hold no videos" % len(files))
  logging.info("Wrote %d predictions to %s", count, output_file)
  interrupts.kept(output_file)
  return count


@contextlib.contextmanager
def errors_naming(shown, local, separator="/"):
  """Errors of the block that name the directory local (a temporary copy) or files in it name
  shown (+ separator + file name) instead."""
  try:
    yield
  except (ValueError, IOError) as error:
    if local == shown:
      raise
    text = str(error).replace(local + os.sep, shown + separator).replace(local, shown)
    raise (ValueError if isinstance(error, ValueError) else IOError)(text) from None


def run():
  if not FLAGS.output_file:
    raise ValueError("--output_file is required")
  if not FLAGS.input_data_pattern:
    raise ValueError("--input_data_pattern is required")
  if FLAGS.top_k < 1 or FLAGS.batch_size < 1 or FLAGS.num_readers < 1:
    raise ValueError("--top_k, --batch_size and --num_readers must be >= 1")
  # The session places the model on the first GPU, if any; nothing is read or written before.
  gpu_check.model_devices(FLAGS.allow_cpu_on_gpu_machine)
  files = readers.glob_files(FLAGS.input_data_pattern, "input_data_pattern")
  if FLAGS.input_model_tgz:
    if FLAGS.train_dir:
      raise ValueError("--train_dir must be empty when --input_model_tgz is given (got %r)"
                       % FLAGS.train_dir)
    with extracted_model_tgz(FLAGS.input_model_tgz, FLAGS.untar_model_dir) as train_dir:
      with errors_naming(FLAGS.input_model_tgz, train_dir, separator=":"):
        return predict_and_pack(train_dir, files)
  elif FLAGS.train_dir:
    synced = staging.SyncedDir(FLAGS.train_dir)  # TF restores from local files
    synced.pull([FLAGS.inference_model_file + ".*", utils.MODEL_FLAGS_FILE])
    with errors_naming(FLAGS.train_dir, synced.local):
      return predict_and_pack(synced.local, files)
  else:
    raise ValueError("Give --train_dir or --input_model_tgz")


def predict_and_pack(train_dir, files):
  """The CSV, then (a model that worked) the tgz."""
  count = predict(train_dir, FLAGS.inference_model_file, files, FLAGS.output_file)
  if FLAGS.output_model_tgz:
    interrupts.check("the CSV, before writing --output_model_tgz")
    prefix, checkpoint_files = model_files(train_dir, FLAGS.inference_model_file)
    write_model_tgz(FLAGS.output_model_tgz, prefix,
                    checkpoint_files + [utils.model_flags_path(train_dir)])
  return count


@utils.tool_main
def main(unused_argv):
  run()


if __name__ == "__main__":
  define_flags()
  app.run(main)
