"""The TF_CONFIG cluster of a distributed training job: this process's role, and the
parameter servers' lifetime (they serve until every trainer has said it is done)."""

import json
import os

import tensorflow as tf
from absl import logging

tf1 = tf.compat.v1

# TF_CONFIG task types, normalized: the original's "master", TF's "chief" and Vertex AI's
# worker-pool names all mean the same roles.
TASK_TYPE_ALIASES = {"master": "chief", "chief": "chief", "workerpool0": "chief",
                     "worker": "worker", "workerpool1": "worker", "ps": "ps",
                     "workerpool2": "ps", "evaluator": "evaluator", "workerpool3": "evaluator"}


class ClusterTask(object):
  """This process's role in a TF_CONFIG cluster (a lone process is the chief)."""

  def __init__(self, cluster=None, task_type="chief", task_index=0):
    self.cluster = cluster or {}
    self.task_type, self.task_index = task_type, task_index
    self.trainers = [(job, i) for job in ("chief", "worker")
                     for i in range(len(self.cluster.get(job, [])))]
    self.distributed = sum(len(addresses) for addresses in self.cluster.values()) > 1
    self.is_chief = task_type == "chief" and task_index == 0
    self.num_ps = len(self.cluster.get("ps", []))
    self.device = "/job:%s/task:%d" % (task_type, task_index)

  @property
  def trainer_index(self):
    return self.trainers.index((self.task_type, self.task_index))


def cluster_task():
  """Parses TF_CONFIG ({"cluster": {...}, "task": {"type", "index"}}) with clear errors."""
  text = os.environ.get("TF_CONFIG", "")
  if not text.strip():
    return ClusterTask()
  try:
    tf_config = json.loads(text)
  except ValueError as error:
    raise ValueError("TF_CONFIG is not valid JSON: %s" % error)
  cluster = {}
  for name, addresses in (tf_config.get("cluster") or {}).items():
    if name not in TASK_TYPE_ALIASES:
      raise ValueError("TF_CONFIG: unknown job %r in the cluster (known: %s)"
                       % (name, ", ".join(sorted(TASK_TYPE_ALIASES))))
    cluster.setdefault(TASK_TYPE_ALIASES[name], []).extend(addresses)
  task = tf_config.get("task") or {}
  task_type = TASK_TYPE_ALIASES.get(task.get("type", "chief"))
  task_index = int(task.get("index", 0))
  if task_type is None:
    raise ValueError("TF_CONFIG: unknown task type %r" % task.get("type"))
  if task_type == "evaluator":
    raise ValueError("TF_CONFIG task type 'evaluator': train.py does not evaluate; run "
                     "python -m youtube-8m.eval on the chief's train_dir instead")
  if cluster and task_index >= len(cluster.get(task_type, [])):
    raise ValueError("TF_CONFIG: task %s:%d is not in the cluster %s" % (task_type, task_index,
                                                                        cluster))
  if cluster and "chief" not in cluster:
    raise ValueError("TF_CONFIG: the cluster has no chief/master task: %s" % cluster)
  if len(cluster.get("chief", [])) > 1:
    raise ValueError("TF_CONFIG: more than one chief/master task: %s" % cluster["chief"])
  return ClusterTask(cluster, task_type, task_index)


def done_queues(task):
  """One queue per parameter server: each trainer puts a token when it ends, so that the
  parameter servers can exit instead of joining forever."""
  queues = []
  for index in range(task.num_ps):
    with tf.device("/job:ps/task:%d" % index):
      name = "done_queue_%d" % index
      queues.append(tf1.FIFOQueue(len(task.trainers), tf.int32, shared_name=name, name=name))
  return queues


def run_parameter_server(task, server):
  """Serves variables until every trainer has signalled the end of training."""
  graph = tf.Graph()
  with graph.as_default():
    dequeue = done_queues(task)[task.task_index].dequeue()
  trainers = len(task.trainers)
  logging.info("Parameter server %d serving; waiting for %d trainers", task.task_index,
               trainers)
  with tf1.Session(server.target, graph=graph) as sess:
    for done in range(trainers):
      sess.run(dequeue)
      logging.info("Parameter server %d: %d/%d trainers done", task.task_index, done + 1,
                   trainers)
  logging.info("Parameter server %d exits", task.task_index)

