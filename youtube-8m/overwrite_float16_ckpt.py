r"""Fills an in-graph ensemble checkpoint with the weights of single models (step 3 of the
original's ensemble commands).

    python -m youtube-8m.overwrite_float16_ckpt --train_dir=ENSEMBLE_DIR \
        --inference_model=inference_model_10 --out_name=inference_model_ensemble_YHLS \
        --checkpoints="single/c24h1440-inference_model_0,single/c32h1024-inference_model_0"

writes the template (eval.py --create_meta_only's) filled from the checkpoints, one per model
in model order, as ``<out_name>-0.*``; nothing on error.
"""

from absl import app
from absl import flags
from absl import logging

from . import checkpoint_utils
from . import ensemble_checkpoint
from . import storage
from . import utils

FLAGS = flags.FLAGS
CheckpointToolError = checkpoint_utils.CheckpointToolError


def define_flags():
  flags.DEFINE_string("train_dir", "/tmp/yt8m_model/",
                      "Ensemble directory: holds the template checkpoint; the output goes here.")
  flags.DEFINE_string("inference_model", "",
                      "Template checkpoint prefix relative to train_dir, e.g. inference_model_10 "
                      "(written by eval.py --create_meta_only on the ensemble graph).")
  flags.DEFINE_string("out_name", "inference_model_float16_mean_ensemble",
                      "Output prefix relative to train_dir; '-0' is appended.")
  flags.DEFINE_string("checkpoints", "",
                      "Comma list of the single-model checkpoint prefixes (full paths, a '.index' "
                      "suffix is accepted), one per model of the template, in model order.")


def overwrite(template_prefix, sources, output_prefix):
  """The template's variables filled from sources, written as output_prefix; the summary."""
  if not checkpoint_utils.checkpoint_exists(template_prefix):
    raise CheckpointToolError(
        "--inference_model: no template checkpoint %s (missing %s.index); write it with eval.py "
        "--create_meta_only on the ensemble train_dir" % (template_prefix, template_prefix))
  if not storage.exists(template_prefix + ".meta"):
    raise CheckpointToolError(
        "--inference_model: the template %s has no .meta (the output's meta graph is a copy "
        "of it); write it with eval.py --create_meta_only" % template_prefix)
  if checkpoint_utils.same_path(output_prefix, template_prefix):
    raise CheckpointToolError("the output %s would replace the template; choose another "
                                  "--out_name" % output_prefix)
  with checkpoint_utils.LocalCopies() as copies:
    plan = ensemble_checkpoint.plan_ensemble(
        ensemble_checkpoint.specs_from_checkpoint(template_prefix, copies), sources, copies,
        "template %s" % template_prefix, outputs=[output_prefix])
    local_meta = copies.local(template_prefix) + ".meta"
    return ensemble_checkpoint.write_plan(
        plan, copies, output_prefix, lambda tmp: storage.copy(local_meta, tmp + ".meta"))


@utils.tool_main
def main(argv):
  if not FLAGS.inference_model:
    raise CheckpointToolError("--inference_model is required (the template checkpoint, "
                                  "e.g. inference_model_10)")
  if not FLAGS.out_name:
    raise CheckpointToolError("--out_name is empty")
  sources = ensemble_checkpoint.parse_checkpoint_list(FLAGS.checkpoints)
  template = checkpoint_utils.resolve_checkpoint(FLAGS.train_dir, FLAGS.inference_model)
  output_prefix = checkpoint_utils.resolve_checkpoint(FLAGS.train_dir, FLAGS.out_name + "-0")
  overwrite(template, sources, output_prefix)
  logging.info("Evaluate it with: python -m youtube-8m.eval --train_dir=%s "
               "--checkpoint_file=%s-0 ...", FLAGS.train_dir, FLAGS.out_name)


if __name__ == "__main__":
  define_flags()
  app.run(main)
