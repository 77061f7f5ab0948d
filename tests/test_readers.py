"""Readers: exact parsing, dequantization, padding, file selection and malformed records."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_records, yt8m

tf1 = tf.compat.v1
readers = yt8m("readers")
dataset_layout = yt8m("dataset_layout")
model_graph = yt8m("model_graph")
model_utils = yt8m("model_utils")


def frame_example(video_id, labels, rgb, audio):
  """A SequenceExample in the 2018 frame-level format from uint8 arrays [frames, size]."""
  example = tf.train.SequenceExample()
  example.context.feature["id"].bytes_list.value.append(video_id.encode())
  example.context.feature["labels"].int64_list.value.extend(labels)
  for name, frames in (("rgb", rgb), ("audio", audio)):
    feature_list = example.feature_lists.feature_list[name]
    for frame in frames:
      feature_list.feature.add().bytes_list.value.append(bytes(bytearray(frame)))
  return example.SerializeToString()


def read_all(reader, files, batch_size=4):
  """Every batch of the reader's dataset, concatenated; input errors as InputDataError."""
  graph = tf.Graph()
  with graph.as_default():
    batch = tf1.data.make_one_shot_iterator(
        reader.dataset(files, batch_size, num_readers=1)).get_next()
    out = {key: [] for key in batch}
    with tf1.Session() as sess:
      while True:
        try:
          values = sess.run(batch)
        except tf.errors.OutOfRangeError:
          break
        except tf.errors.OpError as error:
          raise readers.InputDataError(readers.input_error_message(error, files))
        for key, value in values.items():
          out[key].append(value)
  return {key: np.concatenate(value) for key, value in out.items()}


def test_dequantize_constants():
  q = np.array([0.0, 128.0, 255.0])
  np.testing.assert_allclose(dataset_layout.dequantize(q),
                             [-1.9921875, 128 * 4 / 255 + 4 / 512 - 2, 2.0078125])


def test_graph_dequantize_is_the_original_float32_product_and_sum_bit_for_bit():
  """model_utils.dequantize (one Dequantize op) = the original's float32 graph, q * scale +
  bias as two float32 ops, for every uint8 value; a regression here changes every feature."""
  q = np.arange(256, dtype=np.uint8).reshape(16, 16)
  with tf.Graph().as_default(), tf1.Session() as sess:
    graph_values = sess.run(model_utils.dequantize(tf.constant(q)))
  expected = (q.astype(np.float32) * np.float32(dataset_layout.QUANT_SCALE)
              + np.float32(dataset_layout.QUANT_BIAS))
  assert graph_values.dtype == np.float32
  np.testing.assert_array_equal(graph_values.view(np.uint32), expected.view(np.uint32))


def test_frame_reader_keeps_bytes_pads_and_truncates_and_the_graph_dequantizes(tmp_path):
  rng = np.random.default_rng(0)
  short_rgb = rng.integers(0, 256, (3, 1024), dtype=np.uint8)
  short_audio = rng.integers(0, 256, (3, 128), dtype=np.uint8)
  long_rgb = rng.integers(0, 256, (310, 1024), dtype=np.uint8)
  long_audio = rng.integers(0, 256, (310, 128), dtype=np.uint8)
  path = write_records(str(tmp_path / "train00.tfrecord"), [
      frame_example("aaaa", [5, 1, 5], short_rgb, short_audio),
      frame_example("bbbb", [], long_rgb, long_audio),
      frame_example("cccc", [0], np.zeros((0, 1024), np.uint8), np.zeros((0, 128), np.uint8)),
  ])
  out = read_all(readers.YT8MFrameFeatureReader(num_classes=10), [path])
  assert list(out["video_id"]) == [b"aaaa", b"bbbb", b"cccc"]
  assert out["video_matrix"].dtype == np.uint8
  assert out["video_matrix"].shape == (3, 300, 1152)
  assert list(out["num_frames"]) == [3, 300, 0]
  quantized = [np.concatenate([short_rgb, short_audio], 1),
               np.concatenate([long_rgb, long_audio], 1)[:300]]
  np.testing.assert_array_equal(out["video_matrix"][0, :3], quantized[0])
  np.testing.assert_array_equal(out["video_matrix"][1], quantized[1])
  assert not out["video_matrix"][0, 3:].any() and not out["video_matrix"][2].any()
  assert out["labels"].dtype == bool
  assert list(np.nonzero(out["labels"][0])[0]) == [1, 5]
  assert not out["labels"][1].any()

  with tf.Graph().as_default(), tf1.Session() as sess:
    valid = tf.sequence_mask(out["num_frames"], 300)
    features = sess.run(model_utils.dequantize_frames(out["video_matrix"], valid))
  def dequantized(q):  # docs/original.md, "Input data", in float64
    return q.astype(np.float64) * (4.0 / 255.0) + (4.0 / 512.0 - 2.0)

  assert features.dtype == np.float32
  # float32 arithmetic: absolute error up to a few ulp of 2 (values are in [-2, 2.008])
  np.testing.assert_allclose(features[0, :3], dequantized(quantized[0]), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(features[1], dequantized(quantized[1]), rtol=1e-6, atol=1e-6)
  # zero padding after dequantization: +0.0 exactly
  assert not np.signbit(features[0, 3:]).any() and not features[0, 3:].any()
  assert not np.signbit(features[2]).any() and not features[2].any()


@pytest.mark.parametrize("ensemble_num,iterations,random_frames", [
    (1, 300, True), (1, 20, True), (1, 20, False), (3, 300, True), (3, 20, True)])
def test_quantized_input_equals_dequantized_input(
    tiny_data, tmp_path, ensemble_num, iterations, random_frames):
  """The model fed the reader's uint8 frames (dequantized and normalized in the graph, after
  sampling for a single model) = the model fed the previous reader's float32 features
  (dequantized per record, then zero-padded; normalized before sampling): the input features
  bit for bit; the predictions bit for bit when the models sample the normalized features
  (an ensemble sampling more frames than a video holds), else up to float32 rounding (the
  sampled uint8 frames' rgb and audio columns are normalized apart, the squares summed in
  another order: model_utils.sampled_feature_blocks)."""
  edge = write_records(str(tmp_path / "edge.tfrecord"), [
      frame_example("none", [1], np.zeros((0, 1024), np.uint8), np.zeros((0, 128), np.uint8)),
      frame_example("long", [2], np.full((310, 1024), 255, np.uint8),
                    np.full((310, 128), 7, np.uint8))])
  files = sorted(glob.glob(tiny_data["test_pattern"])) + [edge]
  out = read_all(readers.YT8MFrameFeatureReader(num_classes=40), files, batch_size=8)
  assert 0 in out["num_frames"] and 300 in out["num_frames"] and len(out["num_frames"]) == 22
  config = model_graph.ModelConfig(
      frame_features=True, feature_names="rgb,audio", feature_sizes="1024,128",
      num_classes=40, ensemble_num=ensemble_num, netvlad_cluster_size=[4] * ensemble_num,
      netvlad_hidden_size=[8] * ensemble_num, ensemble_wts=[0.5, 0.3, 0.2][:ensemble_num],
      gating=True, moe_prob_gating=True, iterations=iterations,
      sample_random_frames=random_frames).validate()
  with tf.Graph().as_default(), tf1.Session() as sess:
    quantized = tf1.placeholder(tf.uint8, [None, 300, 1152])
    num_frames = tf1.placeholder(tf.int32, [None])
    padding = tf.logical_not(tf.sequence_mask(num_frames, 300))[:, :, None]
    # the previous reader: dequantize (every frame), then padding rows of 0.0
    dequantized = tf.where(padding, 0.0, dataset_layout.dequantize(tf.cast(quantized,
                                                                           tf.float32)))
    before = model_graph.build_model(config, dequantized, num_frames, is_training=False)
    after = model_graph.build_model(config, quantized, num_frames, is_training=False,
                                    reuse=True)
    sess.run(tf1.global_variables_initializer())
    (predictions, model_input), (new_predictions, new_model_input) = sess.run(
        [before, after], {quantized: out["video_matrix"], num_frames: out["num_frames"]})
  np.testing.assert_array_equal(new_model_input, model_input)
  if ensemble_num * iterations > 300:
    np.testing.assert_array_equal(new_predictions, predictions)
  else:
    np.testing.assert_allclose(new_predictions, predictions, rtol=1e-6, atol=1e-7)
  assert np.ptp(predictions, 0).max() > 1e-4  # the videos' predictions differ


def test_a_batch_of_frameless_videos(tmp_path):
  """A batch whose videos have no frames at all is all padding, not a shape error."""
  empty = np.zeros((0, 1024), np.uint8), np.zeros((0, 128), np.uint8)
  path = write_records(str(tmp_path / "e.tfrecord"),
                       [frame_example("e%d" % i, [i], *empty) for i in range(3)] + [good(5)])
  out = read_all(readers.YT8MFrameFeatureReader(num_classes=10), [path], batch_size=3)
  assert out["video_matrix"].shape == (4, 300, 1152)
  assert not out["video_matrix"][:3].any()
  assert (out["video_matrix"][3, :4] == 5).all() and not out["video_matrix"][3, 4:].any()
  assert list(out["num_frames"]) == [0, 0, 0, 4]
  assert [list(np.nonzero(row)[0]) for row in out["labels"]] == [[0], [1], [2], [1]]


def test_value_rowids_equal_tensorflows():
  """readers._value_rowids on ragged tensors with empty rows (first, middle, last, all)."""
  cases = [[[]], [[], []], [[1, 2], [], [3]], [[], [1], [], [2, 3, 4], []],
           [[5]] * 7 + [[]] * 3 + [[6, 7, 8, 9]]]
  for rows in cases:
    ragged = tf.ragged.constant(rows, dtype=tf.int64, row_splits_dtype=tf.int64)
    ours = readers._value_rowids(ragged)  # pylint: disable=protected-access
    assert ours.dtype == tf.int64
    np.testing.assert_array_equal(ours.numpy(), ragged.value_rowids().numpy(), err_msg=rows)


def test_batches_larger_than_the_parse_batch_are_the_same(tmp_path, monkeypatch):
  path = write_records(str(tmp_path / "a.tfrecord"), [good(i) for i in range(7)])
  whole = read_all(readers.YT8MFrameFeatureReader(), [path], batch_size=5)
  monkeypatch.setattr(readers, "MAX_PARSE_BATCH", 2)
  graph = tf.Graph()
  with graph.as_default():
    batch = tf1.data.make_one_shot_iterator(readers.YT8MFrameFeatureReader().dataset(
        [path], 5, num_readers=1)).get_next()
    with tf1.Session() as sess:
      first, second = sess.run(batch), sess.run(batch)
      with pytest.raises(tf.errors.OutOfRangeError):
        sess.run(batch)
  assert [len(first["labels"]), len(second["labels"])] == [5, 2]
  for key, value in whole.items():
    np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), value)


def test_video_level_reader(tmp_path):
  example = tf.train.Example()
  example.features.feature["id"].bytes_list.value.append(b"vvvv")
  example.features.feature["labels"].int64_list.value.extend([2, 7])
  example.features.feature["mean_rgb"].float_list.value.extend(np.linspace(-1, 1, 1024))
  example.features.feature["mean_audio"].float_list.value.extend(np.linspace(0, 1, 128))
  path = write_records(str(tmp_path / "v.tfrecord"), [example.SerializeToString()])
  out = read_all(readers.YT8MAggregatedFeatureReader(num_classes=10), [path])
  assert out["video_matrix"].shape == (1, 1152)
  np.testing.assert_allclose(out["video_matrix"][0, :1024], np.linspace(-1, 1, 1024),
                             rtol=1e-6)
  assert list(np.nonzero(out["labels"][0])[0]) == [2, 7]
  assert list(out["num_frames"]) == [1]


def good(index):
  return frame_example("id%02d" % index, [1], np.full((4, 1024), index, np.uint8),
                       np.full((4, 128), index, np.uint8))


def two_values_per_frame():
  example = tf.train.SequenceExample.FromString(
      frame_example("bad3", [1], np.zeros((4, 1024), np.uint8), np.zeros((4, 128), np.uint8)))
  example.feature_lists.feature_list["rgb"].feature[2].bytes_list.value.append(b"x" * 1024)
  return example.SerializeToString()


@pytest.mark.parametrize("batch_size", [3, 4])  # the bad record second / first in its batch
@pytest.mark.parametrize("bad,message", [
    (frame_example("bad0", [1], np.zeros((4, 1000), np.uint8), np.zeros((4, 128), np.uint8)),
     "record 2: feature 'rgb' has a frame of 1000 bytes, expected 1024"),
    (frame_example("bad1", [3, 4000], np.zeros((4, 1024), np.uint8),
                   np.zeros((4, 128), np.uint8)),
     "record 2: label id 4000 outside the vocabulary [0, 3862)"),
    (frame_example("bad2", [1], np.zeros((4, 1024), np.uint8), np.zeros((3, 128), np.uint8)),
     "record 2: feature 'audio' has 3 frames but 'rgb' has 4"),
    (two_values_per_frame(), "record 2: feature 'rgb' has a frame of 2 values, expected 1"),
    (b"this is not a protocol buffer", "record 2"),
])
def test_malformed_record_names_file_and_record(tmp_path, bad, message, batch_size):
  first = write_records(str(tmp_path / "a.tfrecord"), [good(0), good(1)])
  second = write_records(str(tmp_path / "b.tfrecord"), [good(2), good(3), bad, good(4)])
  with pytest.raises(readers.InputDataError) as error:
    read_all(readers.YT8MFrameFeatureReader(), [first, second], batch_size)
  assert second in str(error.value)
  assert message in str(error.value)


def test_the_first_bad_record_of_a_batch_is_named(tmp_path):
  """Records are parsed a batch at a time: of two bad records in one batch, the error names
  the earlier, whatever the later one's fault."""
  bad_size = frame_example("size", [1], np.zeros((4, 1000), np.uint8),
                           np.zeros((4, 128), np.uint8))
  bad_label = frame_example("label", [3, 4000], np.zeros((4, 1024), np.uint8),
                            np.zeros((4, 128), np.uint8))
  path = write_records(str(tmp_path / "a.tfrecord"),
                       [good(0), bad_label, good(1), bad_size, bad_label])
  with pytest.raises(readers.InputDataError) as error:
    read_all(readers.YT8MFrameFeatureReader(), [path], batch_size=8)
  assert str(error.value) == "%s: record 1: label id 4000 outside the vocabulary [0, 3862)" % (
      path)


def test_checks_of_batches_without_frames_or_labels(tmp_path):
  """A batch in which a check has no items at all (no frames, no labels) reads, and a fault of
  another check in it is named: every batch makes each check's message from padded items."""
  no_frames = np.zeros((0, 1024), np.uint8), np.zeros((0, 128), np.uint8)
  frameless = write_records(str(tmp_path / "f.tfrecord"), [
      frame_example("f0", [1], *no_frames), frame_example("f1", [2, 4000], *no_frames)])
  with pytest.raises(readers.InputDataError) as error:
    read_all(readers.YT8MFrameFeatureReader(), [frameless], batch_size=2)
  assert str(error.value) == "%s: record 1: label id 4000 outside the vocabulary [0, 3862)" % (
      frameless)
  frames = np.ones((2, 1024), np.uint8), np.ones((2, 128), np.uint8)
  unlabelled = write_records(str(tmp_path / "u.tfrecord"), [
      frame_example("u0", [], *frames),
      frame_example("u1", [], np.ones((2, 1000), np.uint8), frames[1])])
  with pytest.raises(readers.InputDataError) as error:
    read_all(readers.YT8MFrameFeatureReader(), [unlabelled], batch_size=2)
  assert str(error.value) == (
      "%s: record 1: feature 'rgb' has a frame of 1000 bytes, expected 1024" % unlabelled)
  empty = write_records(str(tmp_path / "e.tfrecord"), [frame_example("e0", [], *no_frames)])
  out = read_all(readers.YT8MFrameFeatureReader(), [empty], batch_size=2)
  assert list(out["num_frames"]) == [0] and not out["labels"].any()


def test_corrupted_tfrecord_names_file_and_record(tmp_path):
  path = write_records(str(tmp_path / "c.tfrecord"), [good(i) for i in range(5)])
  data = bytearray(open(path, "rb").read())
  record_size = len(data) // 5
  data[3 * record_size + 40] ^= 0xFF  # inside the 4th record's payload: its CRC fails
  open(path, "wb").write(bytes(data))
  with pytest.raises(readers.InputDataError) as error:
    read_all(readers.YT8MFrameFeatureReader(), [path])
  assert "%s: record 3: corrupted TFRecord" % path in str(error.value)


def test_training_files_exclude_the_60_holdout_files(tmp_path):
  for name in ["train00", "train01"] + ["validate" + c for c in
                                         dataset_layout.HOLDOUT_VALIDATE_CODES] + ["validateAA"]:
    open(str(tmp_path / (name + ".tfrecord")), "w").close()
  train = readers.training_files("%s/train*.tfrecord,%s/validate*.tfrecord" % (tmp_path,
                                                                               tmp_path))
  assert [os.path.basename(f) for f in train] == ["train00.tfrecord", "train01.tfrecord",
                                                  "validateAA.tfrecord"]
  holdout = readers.eval_files("%s/validate*.tfrecord" % tmp_path)
  assert len(holdout) == 60 and os.path.basename(holdout[0]) == "validate0t.tfrecord"
  assert len(readers.eval_files("%s/validate*.tfrecord" % tmp_path, holdout_only=False)) == 61
  os.remove(str(tmp_path / "validatezE.tfrecord"))
  with pytest.raises(IOError, match="1 of the 60 held-out validate files are missing"):
    readers.eval_files("%s/validate*.tfrecord" % tmp_path)
  with pytest.raises(IOError, match="no file matches"):
    readers.training_files("%s/nothing*.tfrecord" % tmp_path)
  with pytest.raises(ValueError, match="TRAIN_GLOB,VALIDATE_GLOB"):
    readers.training_files("a,b,c")
