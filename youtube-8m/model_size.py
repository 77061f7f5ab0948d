r"""Reports the size of an inference model (submission files) against a size limit.

    python -m youtube-8m.model_size --train_dir=DIR [--inference_model_file=inference_model]
    python -m youtube-8m.model_size --model_tgz=submission.tgz [--fail_if_over]

Prints the byte sizes of ``<inference_model_file>.data-*``, ``.index``, ``.meta`` and
``model_flags.json`` (the four files of a 2018 submission) and their total; the number of
tensors by dtype and their data size; the size the same tensors would take with every
floating tensor stored as float32 (4 bytes) and the ratio; and whether the total fits
--limit_bytes (default 2**30 = 1 GiB): "FITS" or "DOES NOT FIT". The exit status is 0 either
way unless --fail_if_over is given (then 1 when over the limit). Sizes in a tgz are those of
the extracted files (only the small .index is extracted, to read the tensor dtypes).

--train_dir, --model_tgz and --results_json may be gs:// URLs (through storage.py): sizes
come from the object listing, and only the .index (or the tgz) is downloaded.
"""

import json
import os
import tarfile
import tempfile

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags
from absl import logging

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


def tensor_report(index_prefix):
  """Tensor count, dtypes, data bytes and float32-equivalent bytes from a checkpoint index."""
  reader = tf.train.load_checkpoint(index_prefix)
  shapes = reader.get_variable_to_shape_map()
  dtypes = reader.get_variable_to_dtype_map()
  by_dtype = {}
  values = tensor_bytes = float32_bytes = 0
  for name, shape in shapes.items():
    dtype = dtypes[name]
    count = int(np.prod(shape, dtype=np.int64))
    values += count
    tensor_bytes += count * dtype.size
    float32_bytes += count * (4 if dtype.is_floating else dtype.size)
    by_dtype[dtype.name] = by_dtype.get(dtype.name, 0) + 1
  return {"tensors": len(shapes), "tensors_by_dtype": by_dtype, "values": values,
          "tensor_bytes": tensor_bytes, "float32_tensor_bytes": float32_bytes}


def _checkpoint_member(name, model_name):
  return name == model_name + ".index" or name == model_name + ".meta" or (
      name.startswith(model_name + ".data-"))


def files_in_dir(train_dir, model_name):
  """(prefix, {file name: bytes}) of the model's files in a local or gs:// directory."""
  prefix = os.path.join(train_dir, model_name)
  files = {}
  for name in storage.listdir(train_dir):
    name = name.rstrip("/")
    if _checkpoint_member(name, model_name) or name == utils.MODEL_FLAGS_FILE:
      files[name] = storage.size(os.path.join(train_dir, name))
  return prefix, files


def measure(train_dir="", model_name="inference_model", model_tgz="", limit=DEFAULT_LIMIT):
  """The size report (a dict) of a model in a directory or in a tgz."""
  report = {"model": model_name, "limit_bytes": limit}
  with tempfile.TemporaryDirectory(prefix="model_size-") as tmp:
    if model_tgz:
      report["source"] = model_tgz
      report["tgz_bytes"] = storage.size(model_tgz)
      files = {}
      # A gs:// tgz is downloaded (into memory when small, else a temporary file).
      with storage.open(model_tgz, "rb") as handle, tarfile.open(
          fileobj=handle, mode="r:*") as archive:
        index_member = None
        for member in archive.getmembers():
          base = os.path.basename(member.name)
          if member.isfile() and (_checkpoint_member(base, model_name)
                                  or base == utils.MODEL_FLAGS_FILE):
            files[base] = member.size
            if base == model_name + ".index":
              index_member = member
        if index_member is None:
          raise IOError("%s holds no %s.index" % (model_tgz, model_name))
        with open(os.path.join(tmp, model_name + ".index"), "wb") as out:
          out.write(archive.extractfile(index_member).read())
      index_prefix = os.path.join(tmp, model_name)
    else:
      if not train_dir:
        raise ValueError("Give --train_dir or --model_tgz")
      report["source"] = train_dir
      index_prefix, files = files_in_dir(train_dir, model_name)
    if model_name + ".index" not in files:
      raise IOError("No %s.index in %s" % (model_name, report["source"]))
    # TensorFlow reads the dtypes from a local .index (a copy of a gs:// one keeps its name).
    index_prefix = storage.stage_file(index_prefix + ".index")[:-len(".index")]
    for suffix in (".meta", ".data-"):
      if not any(name.startswith(model_name + suffix) for name in files):
        logging.warning("%s has no %s%s* file", report["source"], model_name, suffix)
    if utils.MODEL_FLAGS_FILE not in files:
      logging.warning("%s has no %s (a submission needs it)", report["source"],
                      utils.MODEL_FLAGS_FILE)
    report.update(tensor_report(index_prefix))
  data_bytes = sum(size for name, size in files.items()
                   if name.startswith(model_name + ".data-"))
  total = sum(files.values())
  report.update(
      files=files, data_bytes=data_bytes, total_bytes=total,
      float32_total_bytes=total - data_bytes + report["float32_tensor_bytes"],
      ratio=(report["tensor_bytes"] / float(report["float32_tensor_bytes"])
             if report["float32_tensor_bytes"] else 1.0),
      fits=total <= limit, headroom_bytes=limit - total)
  return report


def format_report(report):
  lines = ["Model %s in %s" % (report["model"], report["source"])]
  for name, size in sorted(report["files"].items()):
    lines.append("  %-44s %16s B" % (name, "{:,}".format(size)))
  lines.append("  %-44s %16s B (%.4f GiB)" % ("total", "{:,}".format(report["total_bytes"]),
                                              report["total_bytes"] / 2.0**30))
  if "tgz_bytes" in report:
    lines.append("  %-44s %16s B" % ("(the tgz itself, compressed)",
                                     "{:,}".format(report["tgz_bytes"])))
  lines.append("Tensors: %d (%s), %s values, %s B of tensor data" % (
      report["tensors"], ", ".join("%d %s" % (n, d) for d, n in
                                   sorted(report["tensors_by_dtype"].items())),
      "{:,}".format(report["values"]), "{:,}".format(report["tensor_bytes"])))
  lines.append("Same tensors with every floating tensor as float32: %s B; ratio %.4f "
               "(%.1f%% smaller); all files would total %s B" % (
                   "{:,}".format(report["float32_tensor_bytes"]), report["ratio"],
                   100 * (1 - report["ratio"]), "{:,}".format(report["float32_total_bytes"])))
  verdict = "FITS" if report["fits"] else "DOES NOT FIT"
  lines.append("%s: total %s B vs limit %s B (%.4f GiB): %s B %s" % (
      verdict, "{:,}".format(report["total_bytes"]), "{:,}".format(report["limit_bytes"]),
      report["limit_bytes"] / 2.0**30, "{:,}".format(abs(report["headroom_bytes"])),
      "to spare" if report["fits"] else "over"))
  return "\n".join(lines)


@utils.tool_main
def main(argv):
  if len(argv) > 1:
    raise app.UsageError("unexpected positional arguments: %s" % " ".join(argv[1:]))
  if FLAGS.model_tgz and FLAGS.train_dir:
    raise ValueError("Give either --train_dir or --model_tgz, not both")
  if FLAGS.limit_bytes <= 0:
    raise ValueError("--limit_bytes must be positive")
  report = measure(FLAGS.train_dir, FLAGS.inference_model_file, FLAGS.model_tgz,
                   FLAGS.limit_bytes)
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
