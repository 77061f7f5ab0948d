"""Tests for youtube-8m/synthetic_data.py (synthetic YouTube-8M 2018 data)."""

import glob
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_cli, yt8m

sd = yt8m("synthetic_data")

EXPECTED_HOLDOUT = (
    "0t 1Y 2J 45 5K 5u 63 6f 8F 8f 9y Ap BN CH CI Dz Er GY I6 JP JV K0 MJ Mv "
    "Og Om PL QK Qh Ql T4 UF Uy Vo X6 XX Zq aR cU fr hw k3 lw nX nl o6 p7 pL "
    "pg rx sZ sd uS uf y1 y5 yK yU z8 zE").split()


def records(path):
  return list(tf.compat.v1.io.tf_record_iterator(path))


def parse_frame_file(path):
  """-> list of (id, labels, rgb uint8 [T,1024], audio uint8 [T,128])."""
  out = []
  for r in records(path):
    ex = tf.train.SequenceExample.FromString(r)
    ctx = ex.context.feature
    fls = ex.feature_lists.feature_list
    assert set(ctx.keys()) == {"id", "labels"}
    assert set(fls.keys()) == {"rgb", "audio"}
    assert len(ctx["id"].bytes_list.value) == 1
    assert ctx["labels"].WhichOneof("kind") == "int64_list"
    frames = {}
    for name, dim in (("rgb", 1024), ("audio", 128)):
      vals = []
      for f in fls[name].feature:
        assert f.WhichOneof("kind") == "bytes_list"
        assert len(f.bytes_list.value) == 1
        assert len(f.bytes_list.value[0]) == dim
        vals.append(np.frombuffer(f.bytes_list.value[0], dtype=np.uint8))
      frames[name] = np.stack(vals)
    out.append((ctx["id"].bytes_list.value[0].decode("ascii"),
                list(ctx["labels"].int64_list.value),
                frames["rgb"], frames["audio"]))
  return out


def parse_video_file(path):
  """-> list of (id, labels, mean_rgb [1024], mean_audio [128])."""
  out = []
  for r in records(path):
    feat = tf.train.Example.FromString(r).features.feature
    assert set(feat.keys()) == {"id", "labels", "mean_rgb", "mean_audio"}
    assert len(feat["id"].bytes_list.value) == 1
    assert feat["labels"].WhichOneof("kind") == "int64_list"
    mean_rgb = np.array(feat["mean_rgb"].float_list.value, dtype=np.float32)
    mean_audio = np.array(feat["mean_audio"].float_list.value,
                          dtype=np.float32)
    assert mean_rgb.shape == (1024,) and mean_audio.shape == (128,)
    out.append((feat["id"].bytes_list.value[0].decode("ascii"),
                list(feat["labels"].int64_list.value), mean_rgb, mean_audio))
  return out


def dequantize(q):
  return q.astype(np.float64) * (4.0 / 255.0) + (4.0 / 512.0 - 2.0)


def split_of(path):
  return re.match(r"(train|validate|test)", os.path.basename(path)).group(1)


# ---------------------------------------------------------------------------
# CLI end to end.
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("synth_cli"))
  res = run_cli("synthetic_data", "--output_dir=" + out, "--num_train_files=2",
                "--num_validate_files=2", "--num_test_files=1", "--videos_per_file=12",
                "--test_videos_per_file=5", "--num_classes=100", "--seed=7")
  assert "Wrote" in res.stderr
  return out


@pytest.mark.slow
def test_cli_file_names(cli_dir):
  for level in ("frame", "video"):
    names = sorted(os.listdir(os.path.join(cli_dir, level)))
    assert names == sorted(["train00.tfrecord", "train01.tfrecord",
                            "validate0t.tfrecord", "validate1Y.tfrecord",
                            "test00.tfrecord"])


@pytest.mark.slow
def test_cli_frame_level_format(cli_dir):
  ids = []
  for path in sorted(glob.glob(os.path.join(cli_dir, "frame", "*.tfrecord"))):
    split = split_of(path)
    videos = parse_frame_file(path)
    assert len(videos) == (5 if split == "test" else 12)
    for vid, labels, rgb, audio in videos:
      ids.append(vid)
      assert re.fullmatch(r"[0-9A-Za-z]{4}", vid)
      assert rgb.shape[0] == audio.shape[0] >= 1
      if split == "test":
        assert labels == []
      else:
        assert labels, (path, vid)
        assert labels == sorted(set(labels))
        assert all(0 <= l < 100 for l in labels)
  assert len(ids) == len(set(ids)) == 2 * 12 + 2 * 12 + 5


@pytest.mark.slow
def test_cli_frame_counts_vary(cli_dir):
  counts = []
  for path in glob.glob(os.path.join(cli_dir, "frame", "*.tfrecord")):
    counts += [rgb.shape[0] for _, _, rgb, _ in parse_frame_file(path)]
  assert min(counts) >= 60 and max(counts) <= 360  # default range
  assert any(c < 300 for c in counts)
  assert any(c > 300 for c in counts)


@pytest.mark.slow
def test_cli_video_level_matches_frame_level(cli_dir):
  frame_dir = os.path.join(cli_dir, "frame")
  for path in sorted(glob.glob(os.path.join(cli_dir, "video", "*.tfrecord"))):
    frames = parse_frame_file(os.path.join(frame_dir, os.path.basename(path)))
    videos = parse_video_file(path)
    assert [v[0] for v in videos] == [f[0] for f in frames]
    for (vid, labels, mean_rgb, mean_audio), (_, flabels, rgb, audio) in zip(
        videos, frames):
      assert labels == flabels
      np.testing.assert_allclose(mean_rgb, dequantize(rgb).mean(axis=0),
                                 rtol=0, atol=1e-5)
      np.testing.assert_allclose(mean_audio, dequantize(audio).mean(axis=0),
                                 rtol=0, atol=1e-5)
      # Realistic range: not saturated, roughly centered.
      assert np.abs(mean_rgb).max() < 2.0


@pytest.mark.slow
def test_cli_leaves_no_temp_files(cli_dir):
  for root, _, names in os.walk(cli_dir):
    for name in names:
      assert name.endswith(".tfrecord") and not name.startswith("."), name


@pytest.mark.slow
@pytest.mark.parametrize("args,flag", [
    (["--num_classes=0"], "num_classes"),
    (["--num_classes=5000"], "num_classes"),
    (["--difficulty=1.5"], "difficulty"),
    (["--min_frames=100", "--max_frames=50"], "max_frames"),
    (["--levels=pixels"], "levels"),
    (["--no_such_flag=1"], "no_such_flag"),
])
def test_cli_bad_flags(tmp_path, args, flag):
  res = run_cli("synthetic_data", "--output_dir=" + str(tmp_path / "out"), *args, check=False)
  assert res.returncode != 0
  assert flag in res.stderr, res.stderr
  assert not os.path.exists(str(tmp_path / "out"))


@pytest.mark.slow
def test_cli_requires_output_dir():
  res = run_cli("synthetic_data", "--num_train_files=1", check=False)
  assert res.returncode != 0
  assert "output_dir" in res.stderr


def test_generate_bad_args_name_the_flag(tmp_path):
  with pytest.raises(ValueError, match="num_classes"):
    sd.generate(str(tmp_path), num_classes=0)
  with pytest.raises(ValueError, match="num_validate_files"):
    sd.generate(str(tmp_path), num_validate_files=-1)
  with pytest.raises(ValueError, match="levels"):
    sd.generate(str(tmp_path), levels="all")


# ---------------------------------------------------------------------------
# File names.
# ---------------------------------------------------------------------------
def test_holdout_codes_constant():
  assert sd.HOLDOUT_VALIDATE_CODES == tuple(EXPECTED_HOLDOUT)
  assert len(set(sd.HOLDOUT_VALIDATE_CODES)) == 60
  assert sd.file_codes("validate", 5) == EXPECTED_HOLDOUT[:5]
  assert sd.file_codes("train", 3) == ["00", "01", "02"]


def test_holdout_validate_files(tmp_path):
  out = str(tmp_path)
  summary = sd.generate(out, num_train_files=0, num_validate_files=63,
                        num_test_files=0, videos_per_file=1, min_frames=1,
                        max_frames=3, levels="both", num_classes=10)
  assert summary["num_videos"] == {"train": 0, "validate": 63, "test": 0}
  assert summary["codes"]["validate"][:60] == EXPECTED_HOLDOUT
  for level in ("frame", "video"):
    names = set(os.listdir(os.path.join(out, level)))
    assert len(names) == 63
    for code in EXPECTED_HOLDOUT:
      assert "validate%s.tfrecord" % code in names
    extra = names - {"validate%s.tfrecord" % c for c in EXPECTED_HOLDOUT}
    assert len(extra) == 3
    for name in extra:
      assert re.fullmatch(r"validate[0-9A-Za-z]{2}\.tfrecord", name)
  # Summary file lists match the disk.
  assert sorted(os.path.basename(p) for p in summary["files"]["video"][
      "validate"]) == sorted(os.listdir(os.path.join(out, "video")))


# ---------------------------------------------------------------------------
# Determinism, encoding, atomicity.
# ---------------------------------------------------------------------------
def _small(out, seed, num_threads=None):
  return sd.generate(out, num_train_files=2, num_validate_files=1,
                     num_test_files=1, videos_per_file=3, num_classes=50,
                     min_frames=5, max_frames=40, seed=seed,
                     num_threads=num_threads)


def _all_bytes(out):
  files = sorted(glob.glob(os.path.join(out, "*", "*.tfrecord")))
  return {os.path.relpath(f, out): open(f, "rb").read() for f in files}


def test_deterministic(tmp_path):
  a = _all_bytes(_small(str(tmp_path / "a"), seed=1)["output_dir"])
  b = _all_bytes(_small(str(tmp_path / "b"), seed=1,
                        num_threads=1)["output_dir"])
  c = _all_bytes(_small(str(tmp_path / "c"), seed=2)["output_dir"])
  assert len(a) == 8
  assert a == b
  assert sorted(a) == sorted(c)
  for name in a:
    assert a[name] != c[name], name


def test_encode_bytes_feature_list_matches_protobuf():
  rng = np.random.default_rng(0)
  for length in (1024, 128, 1, 200):
    q = rng.integers(0, 256, size=(7, length), dtype=np.uint8)
    ref = tf.train.FeatureList(feature=[
        tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.tobytes()]))
        for row in q])
    assert sd.encode_bytes_feature_list(q) == ref.SerializeToString()


def test_failed_file_leaves_nothing(tmp_path, monkeypatch):
  calls = []

  def broken(*args):
    calls.append(1)
    if len(calls) > 1:
      raise RuntimeError("boom")
    return b"x"

  monkeypatch.setattr(sd, "_frame_record", broken)
  with pytest.raises(RuntimeError):
    sd.generate(str(tmp_path), num_train_files=1, num_validate_files=0,
                num_test_files=0, videos_per_file=3, min_frames=1,
                max_frames=2, num_threads=1)
  for level in ("frame", "video"):
    assert os.listdir(str(tmp_path / level)) == []


# ---------------------------------------------------------------------------
# The planted signal is learnable and not a label prior.
# ---------------------------------------------------------------------------
def gap(scores, labels, top_k=20):
  """Brute-force GAP: pool top-k (score, is_true) of all videos."""
  pairs = []
  num_pos = sum(len(l) for l in labels)
  for s, l in zip(scores, labels):
    truth = set(l)
    for c in np.argsort(-s, kind="stable")[:top_k]:
      pairs.append((s[c], c in truth))
  pairs.sort(key=lambda p: -p[0])
  hits, total = 0, 0.0
  for i, (_, rel) in enumerate(pairs, 1):
    if rel:
      hits += 1
      total += hits / i
  return total / num_pos


def hit_at_1(scores, labels):
  return np.mean([int(np.argmax(s)) in set(l) for s, l in zip(scores, labels)])


def load_video_split(out, split, num_classes):
  xs, ys = [], []
  for path in sorted(glob.glob(os.path.join(out, "video", split + "*"))):
    for _, labels, mean_rgb, mean_audio in parse_video_file(path):
      xs.append(np.concatenate([mean_rgb, mean_audio]).astype(np.float64))
      ys.append(labels)
  y = np.zeros((len(ys), num_classes))
  for i, l in enumerate(ys):
    y[i, l] = 1.0
  return np.stack(xs), ys, y


def test_signal_learnable_not_prior(tmp_path):
  out, num_classes, seed = str(tmp_path), 100, 5
  sd.generate(out, num_train_files=4, num_validate_files=2, num_test_files=0,
              videos_per_file=100, num_classes=num_classes, min_frames=30,
              max_frames=90, seed=seed, levels="video")
  x_tr, _, y_tr = load_video_split(out, "train", num_classes)
  x_va, labels_va, _ = load_video_split(out, "validate", num_classes)
  assert x_tr.shape == (400, 1152) and x_va.shape == (200, 1152)

  # Label-frequency prior: the same score vector for every video.
  prior = y_tr.mean(axis=0) + 1e-9 * np.arange(num_classes)[::-1]
  prior_scores = np.tile(prior, (len(x_va), 1))
  prior_gap = gap(prior_scores, labels_va)

  # Ridge regression on the video-level means, trained on the train split.
  mu = x_tr.mean(axis=0)
  xc = x_tr - mu
  w = np.linalg.solve(xc.T @ xc + 10.0 * np.eye(xc.shape[1]),
                      xc.T @ (y_tr - y_tr.mean(axis=0)))
  ridge_scores = (x_va - mu) @ w + y_tr.mean(axis=0)
  ridge_gap = gap(ridge_scores, labels_va)

  # Oracle with the true class directions.
  rgb, audio = sd.class_directions(seed, num_classes)
  u = np.concatenate([rgb, audio], axis=1)
  oracle_scores = (x_va - sd.global_offset(seed)) @ u.T
  oracle_gap = gap(oracle_scores, labels_va)

  print("prior GAP %.3f hit@1 %.3f | ridge GAP %.3f hit@1 %.3f | oracle GAP "
        "%.3f" % (prior_gap, hit_at_1(prior_scores, labels_va), ridge_gap,
                  hit_at_1(ridge_scores, labels_va), oracle_gap))
  assert prior_gap < 0.4
  assert ridge_gap > prior_gap + 0.3
  assert hit_at_1(ridge_scores, labels_va) > hit_at_1(prior_scores,
                                                       labels_va) + 0.3
  assert oracle_gap > 0.9


def test_label_statistics():
  sampler = sd._LabelSampler(sd.NUM_CLASSES)
  rng = np.random.default_rng(0)
  sets = [sampler.sample(rng) for _ in range(2000)]
  sizes = [len(s) for s in sets]
  assert all(s == sorted(set(s)) and s for s in sets)
  assert 2.5 < np.mean(sizes) < 3.5
  counts = np.bincount(np.concatenate(sets), minlength=sd.NUM_CLASSES)
  # Long tail: the most frequent vocabulary classes dominate.
  assert counts[:10].sum() > counts[-1000:].sum()
  # Tiny vocabularies still work (labels capped at num_classes).
  small = sd._LabelSampler(1)
  assert small.sample(rng) == [0]


def test_parses_like_the_yt8m_readers(tmp_path):
  """The records parse with the feature specs used by the YouTube-8M readers."""
  out = str(tmp_path)
  summary = sd.generate(out, num_train_files=1, num_validate_files=0,
                        num_test_files=1, videos_per_file=2, num_classes=30,
                        min_frames=3, max_frames=9, seed=4)
  for split in ("train", "test"):
    frame_path = summary["files"]["frame"][split][0]
    video_path = summary["files"]["video"][split][0]
    for frame_rec, video_rec in zip(records(frame_path), records(video_path)):
      ctx, seq = tf.io.parse_single_sequence_example(
          frame_rec,
          context_features={
              "id": tf.io.FixedLenFeature([], tf.string),
              "labels": tf.io.VarLenFeature(tf.int64)},
          sequence_features={
              "rgb": tf.io.FixedLenSequenceFeature([], tf.string),
              "audio": tf.io.FixedLenSequenceFeature([], tf.string)})
      rgb = tf.io.decode_raw(seq["rgb"], tf.uint8).numpy()
      audio = tf.io.decode_raw(seq["audio"], tf.uint8).numpy()
      assert rgb.shape[1] == 1024 and audio.shape[1] == 128
      assert 3 <= rgb.shape[0] == audio.shape[0] <= 9
      feat = tf.io.parse_single_example(video_rec, {
          "id": tf.io.FixedLenFeature([], tf.string),
          "labels": tf.io.VarLenFeature(tf.int64),
          "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32),
          "mean_audio": tf.io.FixedLenFeature([128], tf.float32)})
      assert feat["id"].numpy() == ctx["id"].numpy()
      labels = ctx["labels"].values.numpy().tolist()
      assert feat["labels"].values.numpy().tolist() == labels
      assert (labels == []) == (split == "test")
      np.testing.assert_allclose(feat["mean_rgb"].numpy(),
                                 dequantize(rgb).mean(axis=0), atol=1e-5)
