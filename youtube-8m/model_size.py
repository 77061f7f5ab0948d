r"""Reports the size of an inference model (submission files) against a size limit.

    python -m youtube-8m.model_size --train_dir=DIR [--inference_model_file=inference_model]
    python -m youtube-8m.model_size --model_tgz=submission.tgz [--fail_if_over]

Prints the bytes of ``<inference_model_file>.data-*``, ``.index``, ``.meta`` and
``model_flags.json``, the tensors by dtype, the size were they all float32, and "FITS" or
"DOES NOT FIT" --limit_bytes (exit status 1 then only with --fail_if_over). Sizes in a tgz are
those of the extracted files; only the .index is read.
"""

import collections
import json
import os

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

from . import interrupts
from . import quantization
from . import storage
from . import utils

FLAGS = flags.FLAGS

DEFAULT_LIMIT = 2**30


def define_flags():
  flags.DEFINE_string("train_dir", "", "Directory with the inference model files.")
  flags.DEFINE_string("inference_model_file", "inference_model",
                      "Checkpoint prefix of the inference model (in train_dir or the tgz).")
  flags.DEFINE_string("model_tgz", "", "A submission tgz instead of --train_dir.")
  flags.DEFINE_integer("limit_bytes", DEFAULT_LIMIT,
                       "Size limit of the model files in bytes (default 2**30 = 1 GiB).")
  flags.DEFINE_bool("fail_if_over", False, "Exit with status 1 when over --limit_bytes.")
  flags.DEFINE_string("results_json", "", "If set, also write the report as JSON.")


def _is_model_file(name, model_name):
  return name in (model_name + ".index", model_name + ".meta", utils.MODEL_FLAGS_FILE) or (
      name.startswith(model_name + ".data-"))


def float32_size(name, dtypes):
  """Bytes per value of tensor name with floats as float32 (8-bit codes 4, their codebook 0)."""
  if quantization.kernel_of_codebook(name) in dtypes:
    return 0
  if dtypes[name].is_floating or quantization.codebook_name(name) in dtypes:
    return 4
  return dtypes[name].size


def measure(train_dir="", model_name="inference_model", model_tgz="", limit=DEFAULT_LIMIT):
  """The size report (a dict) of a model in a directory or in a tgz."""
  report = {"model": model_name, "limit_bytes": limit, "source": model_tgz or train_dir}
  index_name = model_name + ".index"
  with storage.temporary_dir("yt8m-model-size") as tmp:
    if model_tgz:
      report["tgz_bytes"] = storage.size(model_tgz)
      # A gs:// tgz is downloaded (into memory when small, else a temporary file).
      with storage.open(model_tgz, "rb") as handle, utils.reading_tgz(model_tgz, handle) as archive:
        members = {}
        for member in archive:  # each read (decompressed) in turn
          interrupts.check("reading %s" % model_tgz)
          if member.isfile() and _is_model_file(os.path.basename(member.name), model_name):
            members[os.path.basename(member.name)] = member
        if index_name not in members:
          raise IOError("%s holds no %s" % (model_tgz, index_name))
        index_file = os.path.join(tmp, index_name)
        with open(index_file, "wb") as out:
          out.write(archive.extractfile(members[index_name]).read())
      files = {name: member.size for name, member in members.items()}
    else:
      if not train_dir:
        raise ValueError("Give --train_dir or --model_tgz")
      files = {name: storage.size(os.path.join(train_dir, name))
               for name in map(lambda n: n.rstrip("/"), storage.listdir(train_dir))
               if _is_model_file(name, model_name)}
      if index_name not in files:
        raise IOError("No %s in %s" % (index_name, train_dir))
      # TensorFlow reads the dtypes from a local .index (a copy of a gs:// one keeps its name).
      index_file = storage.stage_file(os.path.join(train_dir, index_name))
    for suffix in (".meta", ".data-"):
      if not any(name.startswith(model_name + suffix) for name in files):
        logging.warning("%s has no %s%s* file", report["source"], model_name, suffix)
    if utils.MODEL_FLAGS_FILE not in files:
      logging.warning("%s has no %s (a submission needs it)", report["source"],
                      utils.MODEL_FLAGS_FILE)
    try:
      reader = tf.train.load_checkpoint(index_file[:-len(".index")])
    except tf.errors.OpError as error:  # e.g. a truncated .index
      raise ValueError("%s in %s is not readable: %s" % (index_name, report["source"],
                                                         utils.one_line(error.message)))
    dtypes = reader.get_variable_to_dtype_map()
    counts = {name: int(np.prod(shape, dtype=np.int64))
              for name, shape in reader.get_variable_to_shape_map().items()}
  by_dtype = dict(collections.Counter(dtypes[name].name for name in counts))
  tensor_bytes = sum(n * dtypes[name].size for name, n in counts.items())
  float32_bytes = sum(n * float32_size(name, dtypes) for name, n in counts.items())
  data_bytes = sum(size for name, size in files.items()
                   if name.startswith(model_name + ".data-"))
  total = sum(files.values())
  report.update(
      tensors=len(counts), tensors_by_dtype=by_dtype, values=sum(counts.values()),
      tensor_bytes=tensor_bytes, float32_tensor_bytes=float32_bytes, files=files,
      data_bytes=data_bytes, total_bytes=total,
      float32_total_bytes=total - data_bytes + float32_bytes,
      ratio=tensor_bytes / float(float32_bytes) if float32_bytes else 1.0,
      fits=total <= limit, headroom_bytes=limit - total)
  return report


def format_report(report):
  def size(key):
    return "{:,}".format(report[key])

  lines = ["Model %s in %s" % (report["model"], report["source"])]
  lines += ["  %-44s %16s B" % (name, "{:,}".format(n))
            for name, n in sorted(report["files"].items())]
  lines.append("  %-44s %16s B (%.4f GiB)" % ("total", size("total_bytes"),
                                              report["total_bytes"] / 2.0**30))
  if "tgz_bytes" in report:
    lines.append("  %-44s %16s B" % ("(the tgz itself, compressed)", size("tgz_bytes")))
  lines.append("Tensors: %d (%s), %s values, %s B of tensor data" % (
      report["tensors"], ", ".join("%d %s" % (n, d) for d, n in
                                   sorted(report["tensors_by_dtype"].items())),
      size("values"), size("tensor_bytes")))
  lines.append("Same tensors with every floating tensor as float32: %s B; ratio %.4f "
               "(%.1f%% smaller); all files would total %s B" % (
                   size("float32_tensor_bytes"), report["ratio"], 100 * (1 - report["ratio"]),
                   size("float32_total_bytes")))
  lines.append("%s: total %s B vs limit %s B (%.4f GiB): %s B %s" % (
      "FITS" if report["fits"] else "DOES NOT FIT", size("total_bytes"), size("limit_bytes"),
      report["limit_bytes"] / 2.0**30, "{:,}".format(abs(report["headroom_bytes"])),
      "to spare" if report["fits"] else "over"))
  return "\n".join(lines)


@utils.tool_main
def main(argv):
  if FLAGS.model_tgz and FLAGS.train_dir:
    raise ValueError("Give either --train_dir or --model_tgz, not both")
  if FLAGS.limit_bytes <= 0:
    raise ValueError("--limit_bytes must be positive")
  report = measure(FLAGS.train_dir, FLAGS.inference_model_file, FLAGS.model_tgz, FLAGS.limit_bytes)
  print(format_report(report), flush=True)
  if FLAGS.results_json:
    storage.makedirs(os.path.dirname(FLAGS.results_json))  # a no-op for gs://
    utils.write_atomically(FLAGS.results_json, json.dumps(report, indent=1) + "\n")
  if FLAGS.fail_if_over and not report["fits"]:
    return 1
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
