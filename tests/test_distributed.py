"""Distributed training on a real TF_CONFIG cluster (separate processes on 127.0.0.1) and
multi-tower training with CPU devices standing in for GPUs."""

import json
import math
import os
import re
import socket
import time

import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, run_cli, spawn_cli, yt8m

cluster = yt8m("cluster")

MODEL = TINY_FLAGS + ["--netvlad_cluster_size=4", "--netvlad_hidden_size=16"]


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for sock in sockets:
    sock.bind(("127.0.0.1", 0))
  ports = [sock.getsockname()[1] for sock in sockets]
  for sock in sockets:
    sock.close()
  return ports


@pytest.mark.slow
def test_cluster_of_ps_chief_and_worker_trains_and_exits(tiny_data, tmp_path):
  chief, worker, ps = ("127.0.0.1:%d" % port for port in free_ports(3))
  # the original's job name "master" is accepted as the chief
  cluster = {"master": [chief], "worker": [worker], "ps": [ps]}
  train_dir = str(tmp_path / "train")
  args = ["--train_data_pattern=" + tiny_data["train_pattern"], "--train_dir=" + train_dir,
          "--batch_size=8", "--base_learning_rate=0.01", "--max_steps=150",
          "--export_model_steps=50", "--num_epochs=1000"] + MODEL
  processes = {}
  start = time.time()

  def launch(task_type):
    # Each task its own process, forked by the fork server (TF_CONFIG is read after the fork).
    env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": 0}})}
    log = open(str(tmp_path / (task_type + ".log")), "w")
    processes[task_type] = (spawn_cli("train", *args, env=env, stdout=log, stderr=log), log)

  try:
    # The chief trains the 150 tiny steps in a few seconds: it starts only once the worker
    # waits for the variables, so a slow worker start cannot leave the worker without steps.
    launch("ps")
    launch("worker")
    worker_log = str(tmp_path / "worker.log")
    while "Waiting for model to be ready" not in open(worker_log).read():
      assert processes["worker"][0].poll() is None, open(worker_log).read()[-3000:]
      assert time.time() - start < 240, "the worker never waited for the chief"
      time.sleep(0.2)
    launch("master")
    for task_type, (process, log) in processes.items():
      assert process.wait(timeout=300) == 0, open(log.name).read()[-3000:]
  finally:
    for process, log in processes.values():
      if process.poll() is None:
        process.kill()
      log.close()
  logs = {t: open(str(tmp_path / (t + ".log"))).read() for t in processes}
  steps = {t: len(re.findall(r"training step \d+ \|", logs[t])) for t in ("master", "worker")}
  assert steps["master"] > 0 and steps["worker"] > 0, steps
  assert steps["master"] + steps["worker"] >= 150
  assert "Parameter server 0 exits" in logs["ps"]
  assert "Exported" not in logs["worker"]  # only the chief writes checkpoints
  wall = time.time() - start
  print("cluster test wall time: %.1f s, steps chief/worker: %s" % (wall, steps))
  newest = max(int(s) for s in re.findall(r"model\.ckpt-(\d+)\.index",
                                          " ".join(os.listdir(train_dir))))
  assert newest >= 150
  results = str(tmp_path / "eval.json")
  run_cli("eval", "--train_dir=" + train_dir, "--eval_data_pattern=" +
          tiny_data["validate_pattern"], "--run_once", "--results_json=" + results)
  assert json.load(open(results))["global_step"] == str(newest)


def test_tf_config_parsing():
  def parse(config):
    os.environ["TF_CONFIG"] = json.dumps(config)
    try:
      return cluster.cluster_task()
    finally:
      del os.environ["TF_CONFIG"]

  vertex = parse({"cluster": {"workerpool0": ["a:1"], "workerpool1": ["b:1", "c:1"],
                              "workerpool2": ["d:1"]},
                  "task": {"type": "workerpool1", "index": 1}})
  assert (vertex.task_type, vertex.task_index, vertex.trainer_index) == ("worker", 1, 2)
  assert vertex.distributed and not vertex.is_chief and vertex.num_ps == 1
  alone = parse({"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}})
  assert not alone.distributed and alone.is_chief
  for config, message in (
      ({"cluster": {"chief": ["a:1"], "evaluator": ["b:1"]},
        "task": {"type": "evaluator", "index": 0}}, "evaluator"),
      ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}},
       "no chief"),
      ({"cluster": {"chief": ["a:1"], "bogus": ["b:1"]}, "task": {"type": "chief"}},
       "unknown job 'bogus'"),
      ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
        "task": {"type": "worker", "index": 3}}, "worker:3 is not in the cluster"),
      ({"cluster": {"chief": ["a:1"]}, "task": {"type": "janitor", "index": 0}},
       "unknown task type 'janitor'"),
      ({"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}},
       "more than one chief/master task")):
    try:
      parse(config)
    except ValueError as error:
      assert message in str(error), (message, error)
    else:
      raise AssertionError("accepted %s" % config)

  os.environ["TF_CONFIG"] = "{not json"
  try:
    cluster.cluster_task()
  except ValueError as error:
    assert "TF_CONFIG is not valid JSON" in str(error)
  else:
    raise AssertionError("accepted invalid JSON")
  finally:
    del os.environ["TF_CONFIG"]


@pytest.mark.slow
def test_multi_tower_training_with_cpu_devices(tiny_data, tmp_path):
  train_dir = str(tmp_path / "towers")
  # 3 towers of 5: 15 per step; the epochs' smaller final batches split unevenly
  result = run_cli("train", "--train_data_pattern=" + tiny_data["train_pattern"],
                   "--train_dir=" + train_dir, "--batch_size=5", "--num_gpu=3",
                   "--cpu_towers", "--base_learning_rate=0.01", "--num_epochs=2",
                   "--learning_rate_decay=0.5", "--learning_rate_decay_examples=110",
                   "--export_model_steps=1000", *MODEL)
  assert "batch 5 x 3 tower(s)" in result.stderr
  assert "Done training -- epoch limit reached." in result.stderr
  step = int(re.search(r"epoch limit reached\. \(step (\d+)\)", result.stderr).group(1))
  assert step >= 2 * 164 // 15  # every example of both epochs went through a tower
  variables = dict(tf.train.list_variables(os.path.join(train_dir, "model.ckpt-%d" % step)))
  assert len([n for n in variables if not n.endswith(("Adam", "Adam_1"))]) == 32 + 3
  # The logged learning rate: 0.01 * 0.5^floor(step * 5 * 3 / 110) (docs/original.md, "Loss and
  # optimizer"). It is fetched in the run that moves global_step from step - 1 to step; 110 puts no
  # decay boundary between the two at steps 10 and 20 (135..150 and 285..300 examples).
  logged = {}
  for name in os.listdir(train_dir):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(train_dir, name)):
        for value in event.summary.value:
          if value.tag == "learning_rate":
            logged[event.step] = value.simple_value
  assert sorted(logged) == [10, 20], logged
  for logged_step, value in logged.items():
    expected = 0.01 * 0.5 ** math.floor(logged_step * 5 * 3 / 110.0)
    assert abs(value - expected) <= 1e-6 * expected, (logged_step, value, expected)
