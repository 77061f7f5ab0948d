"""Writes a Kaggle submission CSV (VideoId,LabelConfidencePairs) from an inference model.

    python -m youtube-8m.inference --input_model_tgz=SUB.tgz \
        --input_data_pattern='.../test*.tfrecord' --output_file=sub.csv --batch_size=512
    python -m youtube-8m.inference --train_dir=DIR [--inference_model_file=inference_model] ...

The model is the meta graph + checkpoint ``<inference_model_file>`` (as written by eval.py)
with model_flags.json next to it, from --train_dir or from a submission tgz; with
--compute_dtype=bfloat16|float16 the model is rebuilt from model_flags.json instead (the meta
graph computes in float32) and the checkpoint restored into it. The CSV is written under a
temporary name and renamed when complete. --output_model_tgz packs the
model files and model_flags.json (at the archive root) into a submission tgz.
"""

import os
import tarfile
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app
from absl import logging

from . import checkpoint_utils
from . import dataset_layout
from . import fp16_layers
from . import model_utils
from . import progress as progress_lib
from . import readers
from . import staging
from . import storage
from . import utils

tf1 = tf.compat.v1
flags = tf1.flags
FLAGS = flags.FLAGS

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
fp16_layers.define_compute_dtype_flag()
flags.declare_key_flag("compute_dtype")  # listed by --help

CSV_HEADER = "VideoId,LabelConfidencePairs\n"


def format_row(video_id, scores, top_k):
  """'<id>,<label> <score> ...' with the top_k labels by descending score (%i %g)."""
  top_k = min(top_k, len(scores))
  top = np.argpartition(scores, -top_k)[-top_k:]
  top = top[np.argsort(-scores[top], kind="stable")]
  pairs = " ".join("%i %g" % (label, scores[label]) for label in top)
  if isinstance(video_id, bytes):
    video_id = video_id.decode("utf-8")
  return "%s,%s\n" % (video_id, pairs)


def extract_model_tgz(tgz_path, untar_model_dir):
  """Extracts the tgz into a fresh subdirectory; returns the directory of the model files."""
  if not storage.exists(tgz_path):
    raise IOError("--input_model_tgz: %s does not exist" % tgz_path)
  os.makedirs(untar_model_dir, exist_ok=True)
  directory = tempfile.mkdtemp(prefix="model-", dir=untar_model_dir)
  try:
    with tarfile.open(storage.stage_file(tgz_path), mode="r:*") as archive:
      archive.extractall(directory, filter="data")  # refuses members outside directory
  except tarfile.TarError as error:
    raise ValueError("--input_model_tgz %s is not a readable tgz: %s" % (tgz_path, error))
  for root, _, names in os.walk(directory):
    if utils.MODEL_FLAGS_FILE in names:
      return root
  raise IOError("--input_model_tgz %s holds no %s" % (tgz_path, utils.MODEL_FLAGS_FILE))


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
  # Imported here: the model modules define the training flags, which inference.py ignores.
  from . import model_graph  # pylint: disable=g-import-not-at-top
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


def predict(train_dir, model_name, files, output_file):
  model_flags = utils.read_model_flags(train_dir)
  feature_names, feature_sizes = utils.parse_feature_flags(model_flags["feature_names"],
                                                           model_flags["feature_sizes"])
  reader = readers.make_reader(model_flags["frame_features"], feature_names, feature_sizes,
                               model_flags.get("num_classes", dataset_layout.NUM_CLASSES))
  prefix, _ = model_files(train_dir, model_name)
  meta_graph_def = tf1.MetaGraphDef()
  meta_graph_def.ParseFromString(storage.read_bytes(prefix + ".meta"))

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
      # The model reads the reader's tensors directly (no feed copies).
      input_map = {}
      for key, tensor in (("input_batch_raw", video_matrix),
                          ("num_frames", batch["num_frames"])):
        names = meta_graph_def.collection_def[key].node_list.value
        if not names:
          raise ValueError("The inference meta graph has no %r collection" % key)
        input_map[names[0]] = tensor
      saver = tf1.train.import_meta_graph(meta_graph_def, clear_devices=True,
                                          input_map=input_map)
      predictions = tf1.get_collection("predictions")[0]

  count = 0
  start = time.time()
  progress = progress_lib.input_progress("inference", files)
  with storage.local_output(output_file) as tmp_output:
    with tf1.Session(graph=graph) as sess, open(tmp_output, "w") as out:
      saver.restore(sess, prefix)
      sess.run([tf1.local_variables_initializer(), iterator.initializer])
      out.write(CSV_HEADER)
      fetches = {"video_ids": batch["video_id"], "scores": predictions}
      for result in readers.run_batches(sess, fetches, files, progress, count_key="video_ids"):
        video_ids, scores = result["video_ids"], result["scores"]
        out.write("".join(format_row(video_id, row, FLAGS.top_k)
                          for video_id, row in zip(video_ids, scores)))
        count += len(video_ids)
        elapsed = time.time() - start
        logging.info("num examples processed: %d elapsed seconds: %.2f (%.1f videos/sec)",
                     count, elapsed, count / max(elapsed, 1e-9))
  logging.info("Wrote %d predictions to %s", count, output_file)
  return count


def run():
  if not FLAGS.output_file:
    raise ValueError("--output_file is required")
  if not FLAGS.input_data_pattern:
    raise ValueError("--input_data_pattern is required")
  if FLAGS.top_k < 1 or FLAGS.batch_size < 1 or FLAGS.num_readers < 1:
    raise ValueError("--top_k, --batch_size and --num_readers must be >= 1")
  if FLAGS.input_model_tgz:
    if FLAGS.train_dir:
      raise ValueError("--train_dir must be empty when --input_model_tgz is given (got %r)"
                       % FLAGS.train_dir)
    train_dir = extract_model_tgz(FLAGS.input_model_tgz, FLAGS.untar_model_dir)
  elif FLAGS.train_dir:
    synced = staging.SyncedDir(FLAGS.train_dir)  # TF restores from local files
    synced.pull([FLAGS.inference_model_file + ".*", utils.MODEL_FLAGS_FILE])
    train_dir = synced.local
  else:
    raise ValueError("Give --train_dir or --input_model_tgz")
  files = readers.glob_files(FLAGS.input_data_pattern, "input_data_pattern")
  prefix, checkpoint_files = model_files(train_dir, FLAGS.inference_model_file)
  if FLAGS.output_model_tgz:
    write_model_tgz(FLAGS.output_model_tgz, prefix,
                    checkpoint_files + [utils.model_flags_path(train_dir)])
  return predict(train_dir, FLAGS.inference_model_file, files, FLAGS.output_file)


@utils.tool_main
def main(unused_argv):
  run()


if __name__ == "__main__":
  app.run(main)
