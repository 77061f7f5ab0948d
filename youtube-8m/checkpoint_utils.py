"""Checkpoint naming and discovery shared by train, eval, avg_checkpoints and the ensemble tools.

A checkpoint is a V2 "prefix" (e.g. ``train_dir/model.ckpt-5010``) with files
``<prefix>.index``, ``<prefix>.data-00000-of-00001`` and usually ``<prefix>.meta``.
Steps are parsed from the basename only, as the digits after the LAST "-", so digits in
directory names (``c32h512_160``) or in the prefix (``avg_c10h400.ckpt-0``) never matter.
"""

import os
import re
import uuid

import tensorflow as tf

# A prefix given with one of the checkpoint file suffixes is reduced to the prefix itself.
_SUFFIX_RE = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")
_STEP_RE = re.compile(r"^(?P<base>.+)-(?P<step>\d+)$")

TRAIN_CHECKPOINT_BASENAME = "model.ckpt"


def strip_checkpoint_suffix(name):
  """'model.ckpt-10.index' -> 'model.ckpt-10' (also .meta and .data-*); other names unchanged."""
  return _SUFFIX_RE.sub("", name)


def parse_step(prefix, basename=None):
  """The integer step of a checkpoint prefix such as '.../model.ckpt-5010', else None.

  If ``basename`` is given (e.g. 'model.ckpt'), only prefixes '<basename>-<digits>' match.
  """
  name = os.path.basename(strip_checkpoint_suffix(prefix))
  match = _STEP_RE.match(name)
  if not match:
    return None
  if basename is not None and match.group("base") != basename:
    return None
  return int(match.group("step"))


def checkpoint_exists(prefix):
  """True if the V2 checkpoint's index file exists (the file TF writes last)."""
  return tf.io.gfile.exists(prefix + ".index")


def list_checkpoints(directory, basename=TRAIN_CHECKPOINT_BASENAME):
  """[(step, prefix)] of every '<directory>/<basename>-<step>' with an index file, by step."""
  pattern = os.path.join(directory, basename + "-*.index")
  found = []
  for index_file in tf.io.gfile.glob(pattern):
    prefix = index_file[:-len(".index")]
    step = parse_step(prefix, basename)
    if step is not None:
      found.append((step, prefix))
  found.sort()
  return found


def newest_checkpoint(directory, basename=TRAIN_CHECKPOINT_BASENAME):
  """(step, prefix) of the highest-step training checkpoint in directory, or None.

  Deliberately ignores the 'checkpoint' state file, which other tools (the original's eval,
  avg_checkpoints and overwrite_float16_ckpt) re-point at their own outputs.
  """
  found = list_checkpoints(directory, basename)
  return found[-1] if found else None


def resolve_checkpoint(train_dir, name):
  """The prefix of a checkpoint given relative to train_dir (an absolute or gs:// name wins).

  Accepts the prefix itself or any of its files ('.index', '.meta', '.data-*').
  """
  name = strip_checkpoint_suffix(name)
  if os.path.isabs(name) or "://" in name:
    return name
  return os.path.join(train_dir, name)


def save_atomically(prefix, save_fn, meta_fn=None):
  """Writes a checkpoint under a temporary prefix, then renames its files to ``prefix``.

  save_fn(tmp_prefix) writes <tmp>.index and <tmp>.data-*; meta_fn(tmp_prefix), if given,
  writes <tmp>.meta. The index is renamed last, so ``prefix`` is never seen half-written.
  """
  directory, name = os.path.split(prefix)
  tmp_prefix = os.path.join(directory, ".tmp-%s-%s" % (uuid.uuid4().hex[:8], name))
  try:
    save_fn(tmp_prefix)
    if meta_fn is not None:
      meta_fn(tmp_prefix)
    written = tf.io.gfile.glob(tmp_prefix + ".*")
    written.sort(key=lambda path: path.endswith(".index"))
    for path in written:
      tf.io.gfile.rename(path, prefix + path[len(tmp_prefix):], overwrite=True)
  finally:
    for path in tf.io.gfile.glob(tmp_prefix + "*"):
      tf.io.gfile.remove(path)
  return prefix
