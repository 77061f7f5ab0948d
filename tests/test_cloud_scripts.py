"""Cloud job submission: scripts/cloud/*.sh dry runs, the job configs, the container image.

There is no cloud access here, so every script runs with --dry-run and the printed commands are
parsed (shlex) and compared with the original README's commands: the gcloud command, the job name
pattern, the Vertex AI job config (containerSpec, Spot scheduling, baseOutputDirectory) and the
module flags, which must be exactly the original's (the containerSpec `args` list). The module flags
are also parsed by the real modules' absl flag definitions, and the container image's install
step (cloud/container/install.sh on the wheel that build_image.sh builds) runs in a fresh venv,
which then trains from outside the repo.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile

import pytest
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOUD_DIR = os.path.join(REPO_ROOT, "scripts", "cloud")
BUCKET = "gs://tester_yt8m_train_bucket"
PROJECT = "tester-project"
VERSION = re.search(r'^version = "([^"]+)"', open(os.path.join(REPO_ROOT, "pyproject.toml")).read(),
                    re.M).group(1)
# The image build_image.sh pushes and the submit scripts use by default.
IMAGE = "us-east1-docker.pkg.dev/%s/yt8m/yt8m-netvlad-ensemble:%s" % (PROJECT, VERSION)
TRAIN_PATTERN = ("gs://youtube8m-ml-us-east1/2/frame/train/train*.tfrecord,"
                 "gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord")
EVAL_PATTERN = "gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord"
TEST_PATTERN = "gs://youtube8m-ml-us-east1/2/frame/test/test*.tfrecord"
# Vertex AI's default maximum running time (7 days), stated in the job configs.
SCHEDULING = {"strategy": "SPOT", "restartJobOnWorkerRestart": True, "timeout": "604800s"}

# The original README's module flags (the text after `--`), with its shell variables as {names}.
ORIGINAL_TRAIN = (
    "--train_data_pattern='gs://youtube8m-ml-us-east1/2/frame/train/train*.tfrecord,"
    "gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord' "
    "--train_dir={BUCKET_NAME}/c{cs}h{hs}_{batch_size} "
    "--frame_features --feature_names='rgb,audio' --feature_sizes='1024,128' "
    "--batch_size={batch_size} --base_learning_rate=0.0001 --netvlad_cluster_size={cs} "
    "--netvlad_hidden_size={hs} --moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 "
    "--netvlad_relu=False --gating=True --moe_prob_gating=True --max_steps=500000 "
    "--export_model_steps=5000 --num_epochs=10")
ORIGINAL_EVAL_LOOP = (
    "--eval_data_pattern='gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord' "
    "--model=NetVLADModelLF "
    "--train_dir={BUCKET_NAME}/c{cs}h{hs}_{batch_size} --frame_features "
    "--feature_names='rgb,audio' --feature_sizes='1024,128' --batch_size=1024 "
    "--base_learning_rate=0.0001 --netvlad_cluster_size={cs} --netvlad_hidden_size={hs} "
    "--moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False "
    "--gating=True --moe_prob_gating=True --run_once=True --checkpoint=model.ckpt-{CKPT}.index")
ORIGINAL_AVG_RANGE = (
    '--checkpoints_start_end="{ckpt_start},{ckpt_end}" '
    '--prefix="{BUCKET_NAME}/c{cs}h{hs}_{batch_size}/model.ckpt-" '
    '--output_path="{BUCKET_NAME}/c{cs}h{hs}_{batch_size}/avg_c{cs}h{hs}_{ckpt_start}_{ckpt_end}'
    '.ckpt"')
ORIGINAL_AVG_SELECT = (
    '--prefix="{BUCKET_NAME}/c{cs}h{hs}_{batch_size}/model.ckpt-" '
    '--output_path="{BUCKET_NAME}/c{cs}h{hs}_{batch_size}/avg_c{cs}h{hs}_{RANGE_NAME}.ckpt" '
    "--checkpoints=122304,125397,133210,137879,140959,145600,150210,153324,156475,159900,"
    "164900,168029,172960,176234,181138,186032,189900,202410,207267")
ORIGINAL_EVAL_AVERAGE = (
    "--eval_data_pattern='gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord' "
    "--train_dir={BUCKET_NAME}/c{cs}h{hs}_{batch_size} "
    "--frame_features --feature_names='rgb,audio' --feature_sizes='1024,128' --batch_size=1024 "
    "--base_learning_rate=0.0001 --netvlad_cluster_size={cs} --netvlad_hidden_size={hs} "
    "--moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False "
    "--gating=True --moe_prob_gating=True --run_once=True "
    "--checkpoint=avg_c{cs}h{hs}_{checkpoint}.ckpt-0.index")
_ORIGINAL_REPEATED = "".join(
    "--netvlad_cluster_size={MODEL%d_PARAM[0]} --netvlad_hidden_size={MODEL%d_PARAM[1]} "
    "--ensemble_wts={MIXING_WEIGHTS[%d]} " % (i, i, i - 1) for i in range(1, 5))
ORIGINAL_ENSEMBLE = {
    1: ("--train_data_pattern='gs://youtube8m-ml-us-east1/2/frame/train/train*.tfrecord,"
        "gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord' --model=NetVLADModelLF "
        "--train_dir={BUCKET_NAME}/{ENSEMBLE_DIR} --frame_features --feature_names='rgb,audio' "
        "--feature_sizes='1024,128' --batch_size=10 --base_learning_rate=0.00003 "
        + _ORIGINAL_REPEATED +
        "--moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False "
        "--gating=True --moe_prob_gating=True --max_steps=10 --export_model_steps=2000 "
        "--ensemble_num=4 --float16_flag=True"),
    2: ("--eval_data_pattern='gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord' "
        "--model=NetVLADModelLF --train_dir={BUCKET_NAME}/{ENSEMBLE_DIR} --frame_features "
        "--feature_names='rgb,audio' --feature_sizes='1024,128' --batch_size=500 "
        "--base_learning_rate=0.0001 " + _ORIGINAL_REPEATED +
        "--moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False "
        "--gating=True --moe_prob_gating=True --run_once=True --ensemble_num=4 "
        "--float16_flag=True --create_meta_only"),
    3: ("--train_dir={BUCKET_NAME}/{ENSEMBLE_DIR} --inference_model=inference_model_10 "
        "--out_name={INFERENCE_MODEL_NAME} "
        '--checkpoints="{MODEL1_CKPT},{MODEL2_CKPT},{MODEL3_CKPT},{MODEL4_CKPT}"'),
    4: ("--eval_data_pattern='gs://youtube8m-ml-us-east1/2/frame/validate/validate*.tfrecord' "
        "--model=NetVLADModelLF --train_dir={BUCKET_NAME}/{ENSEMBLE_DIR} --frame_features "
        "--feature_names='rgb,audio' --feature_sizes='1024,128' --batch_size=1024 "
        "--base_learning_rate=0.0001 " + _ORIGINAL_REPEATED +
        "--moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 --netvlad_relu=False "
        "--gating=True --moe_prob_gating=True --run_once=True --ensemble_num=4 "
        '--float16_flag=True --checkpoint_file="{INFERENCE_MODEL_NAME}-0"'),
}
ORIGINAL_ENSEMBLE[5] = ORIGINAL_ENSEMBLE[4] + " --force_output_model_name=True"
ORIGINAL_ENSEMBLE_MODULES = {1: "train", 2: "eval", 3: "overwrite_float16_ckpt", 4: "eval",
                             5: "eval"}

# The original's step-0 variables (MIXING_WEIGHTS as tuned in its steps 4-5).
ENSEMBLE_VARS = {
    "BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "ensemble_YHLS",
    "MODEL1_PARAM": ("24", "1440"), "MODEL2_PARAM": ("32", "1024"),
    "MODEL3_PARAM": ("16", "800"), "MODEL4_PARAM": ("32", "512"),
    "MODEL1_CKPT": BUCKET + "/single_models/c24h1440-inference_model_0",
    "MODEL2_CKPT": BUCKET + "/single_models/c32h1024-inference_model_0",
    "MODEL3_CKPT": BUCKET + "/single_models/c16h800-inference_model_0",
    "MODEL4_CKPT": BUCKET + "/single_models/c32h512-inference_model_0",
    "MIXING_WEIGHTS": ("0.39", "0.26", "0.21", "0.14"),
    "INFERENCE_MODEL_NAME": "inference_model_ensemble_YHLS",
}


def original_flags(template, **variables):
  """The original's module flags as the shell would pass them (its quotes removed)."""
  return shlex.split(template.format(**variables))


def script_args(variables):
  """VAR=value arguments; tuples become the space-separated lists the scripts take."""
  return ["%s=%s" % (name, " ".join(value) if isinstance(value, tuple) else value)
          for name, value in variables.items()]


def run_script(script, *args, tmp_path, env=None, path=None):
  """Runs `bash scripts/cloud/SCRIPT args` from the repo root with a clean environment."""
  full_env = {"PATH": path or os.environ.get("PATH", "/usr/bin:/bin"),
              "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "LC_ALL": "C.UTF-8"}
  full_env.update(env or {})
  return subprocess.run(["bash", os.path.join(CLOUD_DIR, script)] + list(args), cwd=REPO_ROOT,
                        env=full_env, capture_output=True, text=True, timeout=120)


def dry_run(script, *args, tmp_path, env=None, project=True):
  extra = ["PROJECT=" + PROJECT] if project else []
  result = run_script(script, "--dry-run", *(extra + list(args)), tmp_path=tmp_path, env=env)
  assert result.returncode == 0, result.stderr
  return parse_dry_run(result.stdout)


# ---------------------------------------------------------------------------------------------
# A YAML reader for the subset the job configs use (block mappings and lists, JSON / plain
# scalars); PyYAML (a test dependency) must parse every rendered file to the same value.

def _yaml_scalar(text):
  text = text.strip()
  if text[:1] in ('"', "[", "{"):
    return json.loads(text)
  if text[:1] == "'":
    return text[1:-1].replace("''", "'")
  if re.fullmatch(r"-?\d+", text):
    return int(text)
  if text in ("true", "false"):
    return text == "true"
  return text


def _yaml_block(lines, pos, indent):
  if lines[pos][1].startswith("- "):
    items = []
    while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
      rest = lines[pos][1][2:]
      if ":" not in rest:
        items.append(_yaml_scalar(rest))
        pos += 1
        continue
      lines[pos] = (indent + 2, rest)
      value, pos = _yaml_block(lines, pos, indent + 2)
      items.append(value)
    return items, pos
  result = {}
  while pos < len(lines) and lines[pos][0] == indent and not lines[pos][1].startswith("- "):
    key, _, rest = lines[pos][1].partition(":")
    assert key and " " not in key, "unsupported YAML line %r" % lines[pos][1]
    pos += 1
    if rest.strip():
      result[key] = _yaml_scalar(rest)
    elif pos < len(lines) and (lines[pos][0] > indent or (
        lines[pos][0] == indent and lines[pos][1].startswith("- "))):
      result[key], pos = _yaml_block(lines, pos, lines[pos][0])
    else:
      result[key] = None
  return result, pos


def load_yaml(text):
  lines = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in text.splitlines()
           if line.strip() and not line.lstrip().startswith("#")]
  value, pos = _yaml_block(lines, 0, lines[0][0])
  assert pos == len(lines), "unparsed YAML from %r" % (lines[pos],)
  assert yaml.safe_load(text) == value  # PyYAML (requirements-test.txt) cross-checks the parser
  return value


# ---------------------------------------------------------------------------------------------
# The dry-run output: shell lines, and `cat > FILE <<'YT8M_EOF'` here-documents.

def parse_dry_run(stdout):
  """-> {"lines": [argv, ...], "raw": [line, ...], "files": {path: text}, "jobs": [job, ...],
  "follow": [(job name, [argv, ...])]} where a job is {"name", "module", "module_flags",
  "argv", "options", "config"}; "follow" holds the commented commands printed after each job
  ("# follow NAME...:" then "#   gcloud ...")."""
  lines, raw, files, jobs, follow = [], [], {}, [], []
  text_lines = stdout.splitlines()
  i = 0
  while i < len(text_lines):
    match = re.match(r"^# follow (\S+?)( \(JOB_ID: .*\))?:$", text_lines[i])
    if match:
      follow.append((match.group(1), []))
      i += 1
      continue
    if text_lines[i].startswith("#   gcloud "):
      follow[-1][1].append(shlex.split(text_lines[i][len("#   "):]))
      i += 1
      continue
    match = re.match(r"^cat > (\S+) <<'YT8M_EOF'$", text_lines[i])
    if match:
      end = text_lines.index("YT8M_EOF", i + 1)
      files[shlex.split(match.group(1))[0]] = "\n".join(text_lines[i + 1:end]) + "\n"
      i = end + 1
      continue
    lines.append(shlex.split(text_lines[i]))
    raw.append(text_lines[i])
    i += 1
  for argv in lines:
    if argv[:5] == ["gcloud", "--verbosity=debug", "ai", "custom-jobs", "create"]:
      options = dict(option.split("=", 1) for option in argv[5:])
      assert set(options) == {"--region", "--display-name", "--config"}, argv
      config = load_yaml(files[options["--config"]])
      spec = config["workerPoolSpecs"][0]["containerSpec"]
      assert spec["command"][:2] == ["python3", "-m"]
      jobs.append({"name": options["--display-name"], "argv": argv, "options": options,
                   "config": config, "module": spec["command"][2],
                   "module_flags": spec["args"]})
  return {"lines": lines, "raw": raw, "files": files, "jobs": jobs, "follow": follow}


def check_follow(out, region="us-east1", job_id="JOB_ID"):
  """After each job: the commands that follow it, in the job's region."""
  assert [name for name, _ in out["follow"]] == [job["name"] for job in out["jobs"]]
  for _, commands in out["follow"]:
    assert commands == [["gcloud", "ai", "custom-jobs", verb, job_id, "--region=" + region]
                        for verb in ("stream-logs", "describe", "cancel")]


def check_job(job, module, output_dir, config=None, region="us-east1", image=IMAGE,
              spot=True):
  """The Vertex AI job around the module flags: the container, its command, Spot scheduling
  that restarts the job after a preemption, and the output directory."""
  assert job["options"]["--region"] == region
  assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", job["name"])
  pools = job["config"]["workerPoolSpecs"]
  template = load_yaml(open(os.path.join(REPO_ROOT, config or "cloud/vertex-gpu.yaml")).read())
  assert len(pools) <= len(template["workerPoolSpecs"])
  for pool, template_pool in zip(pools, template["workerPoolSpecs"]):
    assert pool["machineSpec"] == template_pool["machineSpec"]
    assert set(pool) == {"machineSpec", "replicaCount", "containerSpec"}
    spec = pool["containerSpec"]
    assert spec["imageUri"] == image
    assert spec["command"][:2] == ["python3", "-m"]
    assert pool["replicaCount"] >= 1
  assert job["config"]["scheduling"] == dict(SCHEDULING, strategy="SPOT" if spot else "STANDARD")
  assert job["config"]["baseOutputDirectory"] == {"outputUriPrefix": output_dir}
  assert job["module"] == "youtube-8m." + module


# ---------------------------------------------------------------------------------------------
# Job configs

def test_original_config_kept_and_points_to_vertex():
  text = open(os.path.join(REPO_ROOT, "cloudml-gpu.yaml")).read()
  # As the original: one standard_gpu machine; the runtime versions are kept as strings.
  assert load_yaml(text) == {"trainingInput": {
      "scaleTier": "CUSTOM", "masterType": "standard_gpu", "runtimeVersion": "1.8",
      "pythonVersion": "3.5"}}
  assert "cloud/vertex-gpu.yaml" in text and "2025-01-31" in text
  assert not os.path.exists(os.path.join(REPO_ROOT, "cloud", "cloudml-distributed.yaml"))


@pytest.mark.parametrize("name,pools", [("vertex-gpu.yaml", 1), ("vertex-distributed.yaml", 4)])
def test_vertex_configs(name, pools):
  config = load_yaml(open(os.path.join(REPO_ROOT, "cloud", name)).read())
  assert list(config) == ["baseOutputDirectory", "scheduling", "workerPoolSpecs"]
  assert config["scheduling"] == SCHEDULING
  specs = config["workerPoolSpecs"]
  assert len(specs) == pools
  for index, pool in enumerate(specs):
    assert set(pool) == {"machineSpec", "replicaCount", "containerSpec"}
    assert pool["machineSpec"]["machineType"]
    if "acceleratorType" in pool["machineSpec"]:
      assert pool["machineSpec"]["acceleratorType"].startswith("NVIDIA_")
      assert pool["machineSpec"]["acceleratorCount"] >= 1
    assert set(pool["containerSpec"]) == {"imageUri", "command", "args"}
    assert pool["containerSpec"]["command"] == ["python3", "-m", "youtube-8m.train"]
    # chief: exactly one replica; the optional evaluator (pool 3) is off by default.
    assert pool["replicaCount"] == {0: 1, 3: 0}.get(index, pool["replicaCount"])
  assert "acceleratorType" in specs[0]["machineSpec"]


def test_dockerfile_uses_the_tested_tensorflow_and_install_script():
  """A slim Python 3.11 base pinned by digest (with how to refresh it), the tested TensorFlow
  version with its NVIDIA wheels, and install.sh --cuda: the build fails unless TensorFlow's
  CUDA libraries load."""
  text = open(os.path.join(REPO_ROOT, "cloud", "container", "Dockerfile")).read()
  assert re.search(r"^FROM python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M)
  assert "docker buildx imagetools inspect python:3.11-slim-bookworm" in text
  run_line = re.search(r"^RUN (bash /tmp/yt8m/install\.sh .*\\\n.*)$", text, re.M).group(1)
  assert shlex.split(run_line.replace("\\\n", " ")) == [
      "bash", "/tmp/yt8m/install.sh", "--tensorflow=tensorflow[and-cuda]==2.21.0", "--cuda",
      "python3", "/tmp/yt8m", "&&", "rm", "-rf", "/tmp/yt8m"]
  pinned = open(os.path.join(REPO_ROOT, "requirements.txt")).read()
  assert "tensorflow-cpu==2.21.0" in pinned  # the tested build, CPU variant of the image's


# ---------------------------------------------------------------------------------------------
# The original's jobs

@pytest.mark.slow
def test_train(tmp_path):
  variables = {"BUCKET_NAME": BUCKET, "cs": "100", "hs": "800", "batch_size": "160"}
  out = dry_run("submit_train.sh", *script_args(variables), tmp_path=tmp_path)
  [job] = out["jobs"]
  check_job(job, "train", BUCKET + "/c100h800_160")
  assert job["name"] == "yt8m_train_c100h800_160"
  assert job["module_flags"] == original_flags(ORIGINAL_TRAIN, **variables)
  # The two globs stay one flag value (a list item, not split on the comma).
  assert job["module_flags"][0] == "--train_data_pattern=" + TRAIN_PATTERN
  assert len(out["lines"]) == 2  # mkdir of the job-config directory, gcloud
  assert out["lines"][0] == ["mkdir", "-p", os.path.dirname(job["options"]["--config"])]
  check_follow(out)


@pytest.mark.slow
def test_eval_loop_one_job_per_checkpoint(tmp_path):
  variables = {"BUCKET_NAME": BUCKET, "cs": "10", "hs": "400", "batch_size": "160"}
  ckpts = ["170010", "180010", "190010", "200010", "210010", "220010"]
  out = dry_run("submit_eval_loop.sh", *script_args(variables), "CKPTS=" + " ".join(ckpts),
                tmp_path=tmp_path)
  assert len(out["jobs"]) == len(ckpts)
  for job, ckpt in zip(out["jobs"], ckpts):
    check_job(job, "eval", BUCKET + "/c10h400_160")
    assert re.fullmatch(r"yt8m_eval_c10h400_%s_\d\dH\d\dM\d\dS" % ckpt, job["name"])
    assert job["module_flags"] == original_flags(ORIGINAL_EVAL_LOOP, CKPT=ckpt, **variables)
  assert len({job["options"]["--config"] for job in out["jobs"]}) == len(ckpts)
  check_follow(out)  # one block per job
  # Commas work as separators too (the original's commands write a bash array).
  out = dry_run("submit_eval_loop.sh", *script_args(variables), "CKPTS=(170010,180010)",
                tmp_path=tmp_path)
  assert [job["module_flags"][-1] for job in out["jobs"]] == [
      "--checkpoint=model.ckpt-170010.index", "--checkpoint=model.ckpt-180010.index"]


@pytest.mark.slow
def test_avg_range(tmp_path):
  variables = {"BUCKET_NAME": BUCKET, "cs": "10", "hs": "400", "batch_size": "160",
               "ckpt_start": "150010", "ckpt_end": "220010"}
  out = dry_run("submit_avg_range.sh", *script_args(variables), tmp_path=tmp_path)
  [job] = out["jobs"]
  check_job(job, "avg_checkpoints", BUCKET + "/c10h400_160")
  assert job["name"] == "yt8m_avgckpt_c10h400_150010_220010"
  assert job["module_flags"] == original_flags(ORIGINAL_AVG_RANGE, **variables)


@pytest.mark.slow
def test_avg_select(tmp_path):
  variables = {"BUCKET_NAME": BUCKET, "cs": "32", "hs": "512", "batch_size": "160",
               "RANGE_NAME": "122304_etc_19"}
  steps = ("122304,125397,133210,137879,140959,145600,150210,153324,156475,159900,164900,"
           "168029,172960,176234,181138,186032,189900,202410,207267")
  out = dry_run("submit_avg_select.sh", *script_args(variables), "CHECKPOINTS=" + steps,
                tmp_path=tmp_path)
  [job] = out["jobs"]
  check_job(job, "avg_checkpoints", BUCKET + "/c32h512_160")
  assert job["name"] == "yt8m_avgckpt_c32h512_122304_etc_19"
  assert job["module_flags"] == original_flags(ORIGINAL_AVG_SELECT, **variables)


@pytest.mark.slow
def test_eval_average(tmp_path):
  variables = {"BUCKET_NAME": BUCKET, "cs": "32", "hs": "512", "batch_size": "160",
               "checkpoint": "122304_etc_19"}
  out = dry_run("submit_eval_average.sh", *script_args(variables), tmp_path=tmp_path)
  [job] = out["jobs"]
  check_job(job, "eval", BUCKET + "/c32h512_160")
  assert job["name"] == "yt8m_eval_c32h512_122304_etc_19"
  assert job["module_flags"] == original_flags(ORIGINAL_EVAL_AVERAGE, **variables)


@pytest.mark.slow
@pytest.mark.parametrize("step", [1, 2, 3, 4, 5])
def test_ensemble_steps(tmp_path, step):
  out = dry_run("submit_ensemble.sh", str(step), *script_args(ENSEMBLE_VARS), tmp_path=tmp_path)
  [job] = out["jobs"]
  check_job(job, ORIGINAL_ENSEMBLE_MODULES[step], BUCKET + "/ensemble_YHLS")
  assert re.fullmatch(r"yt8m_train_ensemble_ensemble_YHLS_\d{8}_\d{6}", job["name"])
  assert job["module_flags"] == original_flags(ORIGINAL_ENSEMBLE[step], **ENSEMBLE_VARS)
  if step != 3:  # the repeated flags, in model order
    flags = job["module_flags"]
    assert [f for f in flags if f.startswith("--netvlad_cluster_size=")] == [
        "--netvlad_cluster_size=%s" % c for c in ("24", "32", "16", "32")]
    assert [f for f in flags if f.startswith("--ensemble_wts=")] == [
        "--ensemble_wts=%s" % w for w in ENSEMBLE_VARS["MIXING_WEIGHTS"]]


@pytest.mark.slow
def test_ensemble_model_count_follows_the_variables(tmp_path):
  variables = {"BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "e2", "MODEL1_PARAM": "8,64",
               "MODEL2_PARAM": "(16 128)", "MIXING_WEIGHTS": "0.6,0.4"}
  out = dry_run("submit_ensemble.sh", "1", *script_args(variables), tmp_path=tmp_path)
  flags = out["jobs"][0]["module_flags"]
  assert "--ensemble_num=2" in flags
  start = flags.index("--netvlad_cluster_size=8")
  assert flags[start:start + 6] == [
      "--netvlad_cluster_size=8", "--netvlad_hidden_size=64", "--ensemble_wts=0.6",
      "--netvlad_cluster_size=16", "--netvlad_hidden_size=128", "--ensemble_wts=0.4"]


@pytest.mark.slow
def test_distributed_train(tmp_path):
  variables = {"BUCKET_NAME": BUCKET, "cs": "100", "hs": "800", "batch_size": "160"}
  out = dry_run("submit_distributed_train.sh", *script_args(variables), tmp_path=tmp_path)
  [job] = out["jobs"]
  check_job(job, "train", BUCKET + "/c100h800_160", config="cloud/vertex-distributed.yaml")
  assert job["name"] == "yt8m_train_c100h800_160_dist"
  assert job["module_flags"] == original_flags(ORIGINAL_TRAIN, **variables)
  pools = job["config"]["workerPoolSpecs"]
  assert [pool["replicaCount"] for pool in pools] == [1, 2, 1]  # evaluator left out
  for pool in pools:
    assert pool["containerSpec"]["command"] == ["python3", "-m", "youtube-8m.train"]
    assert pool["containerSpec"]["args"] == job["module_flags"]


@pytest.mark.slow
def test_distributed_train_with_evaluator(tmp_path):
  variables = {"BUCKET_NAME": BUCKET, "cs": "100", "hs": "800", "batch_size": "160"}
  out = dry_run("submit_distributed_train.sh", *script_args(variables), "--evaluator-count=1",
                tmp_path=tmp_path)
  pools = out["jobs"][0]["config"]["workerPoolSpecs"]
  assert [pool["replicaCount"] for pool in pools] == [1, 2, 1, 1]
  evaluator = pools[3]["containerSpec"]
  assert evaluator["command"] == ["python3", "-m", "youtube-8m.eval"]
  assert evaluator["imageUri"] == IMAGE
  # The original's evaluation flags for this train_dir, polling (no --run_once / --checkpoint).
  expected = original_flags(ORIGINAL_EVAL_LOOP, CKPT="0", **variables)
  assert evaluator["args"] == expected[:expected.index("--run_once=True")]
  result = run_script("submit_train.sh", "--dry-run", "--evaluator-count=1", "PROJECT=p",
                      *script_args(variables), tmp_path=tmp_path)
  assert result.returncode != 0 and "--evaluator-count" in result.stderr


# The original's steps 6-7 (inference.py, README "The original's commands, locally")
ORIGINAL_INFERENCE_FROM_DIR = (
    "--train_dir={BUCKET_NAME}/{ENSEMBLE_DIR} --output_model_tgz={tgz} "
    "--input_data_pattern='gs://youtube8m-ml-us-east1/2/frame/test/test*.tfrecord' "
    "--output_file={csv} --batch_size=512")
ORIGINAL_INFERENCE_FROM_TGZ = (
    "--input_model_tgz={tgz} "
    "--input_data_pattern='gs://youtube8m-ml-us-east1/2/frame/test/test*.tfrecord' "
    "--output_file={csv} --batch_size=512")


@pytest.mark.slow
def test_inference_from_train_dir_writes_csv_and_tgz(tmp_path):
  tgz = BUCKET + "/submission/ensemble_YHLS.tgz"
  out = dry_run("submit_inference.sh", "BUCKET_NAME=" + BUCKET, "ENSEMBLE_DIR=ensemble_YHLS",
                "--output_model_tgz=" + tgz, tmp_path=tmp_path)
  [job] = out["jobs"]
  check_job(job, "inference", BUCKET + "/ensemble_YHLS")
  assert re.fullmatch(r"yt8m_inference_ensemble_YHLS_\d{8}_\d{6}", job["name"])
  assert job["module_flags"] == original_flags(
      ORIGINAL_INFERENCE_FROM_DIR, BUCKET_NAME=BUCKET, ENSEMBLE_DIR="ensemble_YHLS", tgz=tgz,
      csv=BUCKET + "/ensemble_YHLS/submission.csv")
  check_follow(out)
  # Without --output_model_tgz: the CSV only; --output_file and batch_size as given.
  out = dry_run("submit_inference.sh", "BUCKET_NAME=" + BUCKET, "ENSEMBLE_DIR=e2",
                "--output_file=gs://other/sub/e2.csv", "batch_size=128", tmp_path=tmp_path,
                env={"TEST_DATA_PATTERN": "gs://other/test/*.tfrecord"})
  assert out["jobs"][0]["module_flags"] == [
      "--train_dir=%s/e2" % BUCKET, "--input_data_pattern=gs://other/test/*.tfrecord",
      "--output_file=gs://other/sub/e2.csv", "--batch_size=128"]


@pytest.mark.slow
def test_inference_from_tgz(tmp_path):
  tgz = "gs://other_bucket/subs/ensemble_YHLS.tgz"
  out = dry_run("submit_inference.sh", "BUCKET_NAME=" + BUCKET, "--input_model_tgz=" + tgz,
                "--region=europe-west4", tmp_path=tmp_path)
  [job] = out["jobs"]
  # The job writes next to the tgz: the CSV's directory is its output directory.
  check_job(job, "inference", "gs://other_bucket/subs", region="europe-west4",
            image=IMAGE.replace("us-east1", "europe-west4"))
  assert job["module_flags"] == original_flags(ORIGINAL_INFERENCE_FROM_TGZ, tgz=tgz,
                                           csv="gs://other_bucket/subs/ensemble_YHLS.csv")
  assert re.fullmatch(r"yt8m_inference_ensemble_YHLS_\d{8}_\d{6}", job["name"])
  check_follow(out, region="europe-west4")


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    ([], "give ENSEMBLE_DIR"),
    (["ENSEMBLE_DIR=e", "--input_model_tgz=gs://b/s.tgz"], "not both"),
    (["--input_model_tgz=gs://b/s.tgz", "--output_model_tgz=gs://b/t.tgz"],
     "--output_model_tgz packs the model of a train_dir"),
    (["--input_model_tgz=sub.tgz"], "--input_model_tgz must be a gs:// URL"),
    (["--input_model_tgz=gs://b/s.zip"], "--input_model_tgz must name a .tgz"),
    (["ENSEMBLE_DIR=e", "--output_model_tgz=/tmp/s.tgz"], "--output_model_tgz must be a gs://"),
    (["ENSEMBLE_DIR=e", "--output_file=out.csv"], "--output_file must be a gs://"),
    (["ENSEMBLE_DIR=e", "--output_file=gs://b/out.txt"], "--output_file must name a .csv"),
    (["ENSEMBLE_DIR=gs://b/e"], "ENSEMBLE_DIR is a directory name"),
    (["ENSEMBLE_DIR=e", "batch_size=0"], "batch_size must be >= 1"),
    (["ENSEMBLE_DIR=e", "batch_size=x"], "batch_size must be a non-negative integer"),
])
def test_inference_bad_input(tmp_path, args, message):
  result = run_script("submit_inference.sh", "--dry-run", "PROJECT=" + PROJECT,
                      "BUCKET_NAME=" + BUCKET, *args, tmp_path=tmp_path)
  assert result.returncode != 0
  assert message in result.stderr, result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one clear line
  assert result.stdout == ""


# Every submit script, with the variables of one job.
ONE_JOB_RUNS = [
    ("submit_train.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2", "batch_size": "3"}),
    ("submit_eval_loop.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2", "batch_size": "3",
                                 "CKPTS": "10"}),
    ("submit_avg_range.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2", "batch_size": "3",
                                 "ckpt_start": "1", "ckpt_end": "2"}),
    ("submit_avg_select.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2",
                                  "batch_size": "3", "RANGE_NAME": "r", "CHECKPOINTS": "1,2"}),
    ("submit_eval_average.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2",
                                    "batch_size": "3", "checkpoint": "1_2"}),
    ("submit_ensemble.sh", ["4"], ENSEMBLE_VARS),
    ("submit_distributed_train.sh", ["--evaluator-count=1"],
     {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2", "batch_size": "3"}),
    ("submit_inference.sh", [], {"BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "e"}),
]


def test_every_submit_script_is_covered():
  scripts = {name for name in os.listdir(CLOUD_DIR) if name.startswith("submit_")}
  assert scripts == {script for script, _, _ in ONE_JOB_RUNS}


@pytest.mark.slow
@pytest.mark.parametrize("script,extra,variables", ONE_JOB_RUNS)
def test_submit_scripts_print_follow_commands_and_attach_tensorboard(tmp_path, script, extra,
                                                                     variables):
  """Every script prints how to follow its job; --tensorboard/--service-account become the
  CustomJobSpec fields `tensorboard` and `serviceAccount` of the job config."""
  out = dry_run(script, *(extra + script_args(variables)), "--region=us-west1",
                tmp_path=tmp_path)
  assert len(out["jobs"]) == 1
  check_follow(out, region="us-west1")
  assert "tensorboard" not in out["jobs"][0]["config"]
  tensorboard = "projects/%s/locations/us-west1/tensorboards/1234" % PROJECT
  account = "yt8m-jobs@%s.iam.gserviceaccount.com" % PROJECT
  out = dry_run(script, *(extra + script_args(variables)), "--region=us-west1",
                "--tensorboard=" + tensorboard, tmp_path=tmp_path,
                env={"SERVICE_ACCOUNT": account})
  config = out["jobs"][0]["config"]
  assert config["tensorboard"] == tensorboard and config["serviceAccount"] == account
  assert set(config) == {"baseOutputDirectory", "scheduling", "serviceAccount", "tensorboard",
                         "workerPoolSpecs"}


@pytest.mark.slow
@pytest.mark.parametrize("edit,message", [
    (("restartJobOnWorkerRestart: true", "restartJobOnWorkerRestart: true\n  maxRunTime: 1"),
     "'maxRunTime' is not a field of CustomJobSpec.scheduling"),
    (("\nscheduling:\n", "\nserviceAcount: \"x\"\nscheduling:\n"),
     "'serviceAcount' is not a field of CustomJobSpec in"),
    (("  replicaCount: 1", "  replicaCount: 1\n  replica_count: 1"),
     "'replica_count' is not a field of WorkerPoolSpec (pool 0)"),
    (("    acceleratorCount: 1", "    acceleratorCount: 1\n    gpuCount: 1"),
     "'gpuCount' is not a field of WorkerPoolSpec (pool 0).machineSpec"),
    (('timeout: "604800s"', "timeout: 7d"), "scheduling.timeout '7d' is not a duration"),
])
def test_config_field_names_checked_against_the_v1_api(tmp_path, edit, message):
  """A misspelt key of a job config template is refused before anything is submitted."""
  text = open(os.path.join(REPO_ROOT, "cloud", "vertex-gpu.yaml")).read()
  assert edit[0] in text
  bad = tmp_path / "bad.yaml"
  bad.write_text(text.replace(edit[0], edit[1], 1))
  base = {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2", "batch_size": "3", "PROJECT": PROJECT}
  result = run_script("submit_train.sh", "--dry-run", "--config=%s" % bad, *script_args(base),
                      tmp_path=tmp_path)
  assert result.returncode != 0
  assert message in result.stderr, result.stderr
  assert result.stdout == ""


# ---------------------------------------------------------------------------------------------
# Before the first job: the region and the preflight checks

def test_default_region_is_the_data_buckets():
  """The jobs run where the public data is (gs://youtube8m-ml-us-east1 is in us-east1), and
  every place that names the default says so."""
  lib = open(os.path.join(CLOUD_DIR, "lib.sh")).read()
  default = re.search(r"^YT8M_DEFAULT_REGION=(\S+)$", lib, re.M).group(1)
  data_bucket = re.search(r"gs://youtube8m-ml-([a-z0-9-]+)/", TRAIN_PATTERN).group(1)
  assert default == data_bucket == "us-east1"
  for path in ("README.md", "scripts/cloud/README.md", "scripts/cloud/lib.sh",
               "scripts/cloud/build_image.sh"):
    text = open(os.path.join(REPO_ROOT, path)).read()
    assert "us-central1" not in text, path


PREFLIGHT_STUB = """#!/usr/bin/env python3
# gcloud for preflight.sh: answers from the JSON in $GCLOUD_WORLD.
import json, os, sys
world = json.load(open(os.environ["GCLOUD_WORLD"]))
args = sys.argv[1:]
if args[:2] == ["services", "list"]:
  print("\\n".join(world["apis"]))
elif args[:2] == ["storage", "ls"]:
  files = world["files"].get(args[2], [])
  if not files:
    sys.stderr.write("ERROR: (gcloud.storage.ls) One or more URLs matched no objects.\\n")
    sys.exit(1)
  print("\\n".join(files))
elif args[:3] == ["storage", "buckets", "describe"]:
  location = world["locations"].get(args[3])
  if location is None:
    sys.stderr.write("ERROR: (gcloud.storage.buckets.describe) HTTPError 403: no "
                     "storage.buckets.get access\\n")
    sys.exit(1)
  print(location)
else:
  sys.exit("unexpected gcloud call: %r" % args)
"""
ALL_APIS = ["aiplatform.googleapis.com", "storage.googleapis.com",
            "artifactregistry.googleapis.com", "cloudbuild.googleapis.com",
            "compute.googleapis.com"]
ORIGINAL_FILES = {
    "gs://youtube8m-ml-us-east1/2/frame/train/train*.tfrecord": [
        "gs://youtube8m-ml-us-east1/2/frame/train/train%04d.tfrecord" % i for i in range(5)],
    EVAL_PATTERN: ["gs://youtube8m-ml-us-east1/2/frame/validate/validate00.tfrecord"],
    TEST_PATTERN: ["gs://youtube8m-ml-us-east1/2/frame/test/test%02d.tfrecord" % i
                   for i in range(4)],
}


@pytest.mark.slow
def test_preflight_dry_run(tmp_path):
  result = run_script("preflight.sh", "--dry-run", "BUCKET_NAME=%s/sub/" % BUCKET,
                      "PROJECT=" + PROJECT, tmp_path=tmp_path)
  assert result.returncode == 0, result.stderr
  assert [shlex.split(line) for line in result.stdout.splitlines()] == [
      ["gcloud", "services", "list", "--enabled", "--project=" + PROJECT,
       "--format=value(config.name)"],
      # the validate glob of the training data and the evaluation data, listed once
      ["gcloud", "storage", "ls", TRAIN_PATTERN.split(",")[0]],
      ["gcloud", "storage", "ls", EVAL_PATTERN],
      ["gcloud", "storage", "ls", TEST_PATTERN],
      ["gcloud", "storage", "buckets", "describe", "gs://tester_yt8m_train_bucket",
       "--format=value(location)"],
      ["gcloud", "storage", "buckets", "describe", "gs://youtube8m-ml-us-east1",
       "--format=value(location)"]]


def run_preflight(tmp_path, world, *args):
  stub_dir = tmp_path / "stub"
  stub_dir.mkdir(exist_ok=True)
  (stub_dir / "gcloud").write_text(PREFLIGHT_STUB)
  os.chmod(str(stub_dir / "gcloud"), 0o755)
  (tmp_path / "world.json").write_text(json.dumps(world))
  return run_script("preflight.sh", "BUCKET_NAME=" + BUCKET, *args, tmp_path=tmp_path,
                    env={"GCLOUD_WORLD": str(tmp_path / "world.json")},
                    path="%s:%s" % (stub_dir, os.environ.get("PATH", "/usr/bin:/bin")))


@pytest.mark.slow
def test_preflight_passes(tmp_path):
  world = {"apis": ALL_APIS, "files": ORIGINAL_FILES,
           "locations": {"gs://tester_yt8m_train_bucket": "US-EAST1"}}
  result = run_preflight(tmp_path, world, "shards=2")
  assert result.returncode == 0, result.stderr
  assert "ok: DATA_PATTERN: 5 file(s) match %s; the first 2:" % TRAIN_PATTERN.split(",")[0] \
      in result.stdout
  assert "    gs://youtube8m-ml-us-east1/2/frame/train/train0001.tfrecord" in result.stdout
  assert "train0002" not in result.stdout
  assert "ok: DATA_PATTERN/EVAL_DATA_PATTERN: 1 file(s) match " + EVAL_PATTERN in result.stdout
  assert "ok: gs://tester_yt8m_train_bucket is in us-east1, the jobs' region" in result.stdout
  # The public bucket's location cannot be read: a note, not a failure.
  assert re.search(r"note: the location of data bucket gs://youtube8m-ml-us-east1 cannot be "
                   r"read \(.*403.*\); not checked", result.stderr)
  assert result.stdout.rstrip().endswith("preflight passed: the jobs can run in us-east1")


@pytest.mark.slow
def test_preflight_reports_every_failure(tmp_path):
  files = dict(ORIGINAL_FILES)
  del files[TEST_PATTERN]
  world = {"apis": [api for api in ALL_APIS if api != "aiplatform.googleapis.com"],
           "files": files, "locations": {"gs://tester_yt8m_train_bucket": "US-CENTRAL1",
                                         "gs://youtube8m-ml-us-east1": "US-EAST1"}}
  result = run_preflight(tmp_path, world)
  assert result.returncode == 1
  failed = [line for line in result.stderr.splitlines() if "FAILED" in line]
  assert len(failed) == 3, result.stderr
  assert "API aiplatform.googleapis.com is not enabled: gcloud services enable " \
      "aiplatform.googleapis.com" in failed[0]
  assert "TEST_DATA_PATTERN: gcloud storage ls %s: ERROR:" % TEST_PATTERN in failed[1]
  assert "BUCKET_NAME gs://tester_yt8m_train_bucket is in us-central1 but the jobs run in " \
      "us-east1" in failed[2]
  assert "3 check(s) failed" in result.stderr
  # The data bucket elsewhere than the jobs: named too.
  world["locations"]["gs://tester_yt8m_train_bucket"] = "europe-west4"
  world["apis"], world["files"] = ALL_APIS, ORIGINAL_FILES
  result = run_preflight(tmp_path, world, "--region=europe-west4")
  assert result.returncode == 1
  assert "data bucket gs://youtube8m-ml-us-east1 is in us-east1 but the jobs run in " \
      "europe-west4" in result.stderr
  # An own bucket that cannot be described (missing): how to create it.
  del world["locations"]["gs://tester_yt8m_train_bucket"]
  result = run_preflight(tmp_path, world)
  assert "BUCKET_NAME: cannot read the location of gs://tester_yt8m_train_bucket" in \
      result.stderr
  assert "gcloud storage buckets create gs://tester_yt8m_train_bucket --location=us-east1" in \
      result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["BUCKET_NAME=bucket"], "BUCKET_NAME must be a gs:// URL"),
    (["BUCKET_NAME=" + BUCKET, "--data-pattern=/data/train*.tfrecord"],
     "DATA_PATTERN: '/data/train*.tfrecord' is not a gs:// pattern"),
    (["BUCKET_NAME=" + BUCKET, "shards=many"], "shards must be"),
    ([], "BUCKET_NAME"),
])
def test_preflight_bad_options(tmp_path, args, message):
  result = run_script("preflight.sh", "--dry-run", *args, tmp_path=tmp_path)
  assert result.returncode == 2
  assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
  assert result.stdout == ""


# ---------------------------------------------------------------------------------------------
# Options

@pytest.mark.slow
def test_options(tmp_path):
  variables = script_args({"BUCKET_NAME": BUCKET + "/", "cs": "16", "hs": "128",
                           "batch_size": "80"})
  pattern = "gs://my-bucket/frame/train*.tfrecord,gs://my-bucket/frame/validate*.tfrecord"
  out = dry_run("submit_train.sh", *variables, "--region=europe-west4", tmp_path=tmp_path,
                env={"DATA_PATTERN": pattern})
  [job] = out["jobs"]
  # The default image lives in the job's region.
  check_job(job, "train", BUCKET + "/c16h128_80", region="europe-west4",
            image=IMAGE.replace("us-east1", "europe-west4"))
  assert job["module_flags"][:2] == ["--train_data_pattern=" + pattern,
                                     "--train_dir=%s/c16h128_80" % BUCKET]
  check_follow(out, region="europe-west4")
  # --VAR=value, environment variables, --job-name, --image-uri (no project needed), on-demand.
  out = dry_run("submit_train.sh", "--cs=16", "--hs=128", "--batch_size=80",
                "--job-name=my_job", "--image-uri=example.com/image:1", "--no-spot",
                tmp_path=tmp_path, env={"BUCKET_NAME": BUCKET, "REGION": "us-west1"},
                project=False)
  check_job(out["jobs"][0], "train", BUCKET + "/c16h128_80", region="us-west1",
            image="example.com/image:1", spot=False)
  assert out["jobs"][0]["name"] == "my_job"
  out = dry_run("submit_train.sh", *variables, tmp_path=tmp_path, project=False,
                env={"IMAGE_URI": "example.com/image:2"})
  assert out["jobs"][0]["config"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"] == \
      "example.com/image:2"


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--backend=ai-platform"], "shut down on 2025-01-31"),
    (["--config=cloudml-gpu.yaml"], "cloud/vertex-gpu.yaml"),
    (["--config=youtube-8m/cloudml-gpu.yaml"], "cloud/vertex-gpu.yaml"),
    (["--config=missing.yaml"], "not found"),
    (["--config=cloud/container/install.sh"], "workerPoolSpecs"),
    (["--bogus=1"], "unknown option"),
    (["cs=x"], "cs must be"),
    (["BUCKET_NAME=bucket"], "gs://"),
    (["PROJECT="], "no Google Cloud project"),
    (["--tensorboard=projects/p/locations/us-east1/tensorboards/1"], "needs --service-account"),
    (["--tensorboard=projects/p/locations/europe-west4/tensorboards/1",
      "--service-account=a@p.iam.gserviceaccount.com"], "in europe-west4 but the jobs run in"),
    (["--tensorboard=my-board", "--service-account=a@p.iam.gserviceaccount.com"],
     "--tensorboard must be a TensorBoard instance name"),
    (["--service-account=not-an-email"], "--service-account must be a service account"),
])
def test_bad_options(tmp_path, args, message):
  base = {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2", "batch_size": "3", "PROJECT": PROJECT}
  result = run_script("submit_train.sh", "--dry-run", *(script_args(base) + args),
                      tmp_path=tmp_path)
  assert result.returncode != 0
  assert message in result.stderr, result.stderr
  assert result.stdout == ""


@pytest.mark.slow
def test_help(tmp_path):
  for script in sorted(os.listdir(CLOUD_DIR)):
    if script.endswith(".sh") and script != "lib.sh":
      result = run_script(script, "--help", tmp_path=tmp_path)
      assert result.returncode == 0 and "--dry-run" in result.stdout, script
      assert "scripts/cloud/" + script in result.stdout


# ---------------------------------------------------------------------------------------------
# Missing variables

MISSING_CASES = [
    ("submit_train.sh", [], {"cs": "1", "hs": "2", "batch_size": "3"}, "BUCKET_NAME"),
    ("submit_train.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2"}, "batch_size"),
    ("submit_eval_loop.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2",
                                 "batch_size": "3"}, "CKPTS"),
    ("submit_avg_range.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2", "batch_size": "3",
                                 "ckpt_start": "5"}, "ckpt_end"),
    ("submit_avg_select.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2",
                                  "batch_size": "3", "CHECKPOINTS": "5,6"}, "RANGE_NAME"),
    ("submit_avg_select.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2",
                                  "batch_size": "3", "RANGE_NAME": "r"}, "CHECKPOINTS"),
    ("submit_eval_average.sh", [], {"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2",
                                    "batch_size": "3"}, "checkpoint"),
    ("submit_distributed_train.sh", [], {"BUCKET_NAME": BUCKET, "hs": "2", "batch_size": "3"},
     "cs"),
    ("submit_ensemble.sh", ["1"], {"BUCKET_NAME": BUCKET, "MODEL1_PARAM": "1 2",
                                   "MIXING_WEIGHTS": "1"}, "ENSEMBLE_DIR"),
    ("submit_ensemble.sh", ["2"], {"BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "e",
                                   "MODEL1_PARAM": "1 2"}, "MIXING_WEIGHTS"),
    ("submit_ensemble.sh", ["2"], {"BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "e",
                                   "MIXING_WEIGHTS": "1"}, "MODEL1_PARAM"),
    ("submit_ensemble.sh", ["1"], {"BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "e",
                                   "MODEL1_PARAM": "1 2", "MODEL3_PARAM": "3 4",
                                   "MIXING_WEIGHTS": "1 1"}, "MODEL2_PARAM"),
    ("submit_ensemble.sh", ["1"], {"BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "e",
                                   "MODEL1_PARAM": "1 2", "MODEL2_PARAM": "3 4",
                                   "MIXING_WEIGHTS": "1"}, "MIXING_WEIGHTS"),
    ("submit_ensemble.sh", ["3"], {"BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "e",
                                   "MODEL1_CKPT": "gs://b/m1"}, "INFERENCE_MODEL_NAME"),
    ("submit_ensemble.sh", ["3"], {"BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "e",
                                   "INFERENCE_MODEL_NAME": "i"}, "MODEL1_CKPT"),
    ("submit_ensemble.sh", ["4"], {"BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "e",
                                   "MODEL1_PARAM": "1 2", "MIXING_WEIGHTS": "1"},
     "INFERENCE_MODEL_NAME"),
    ("submit_ensemble.sh", [], dict(ENSEMBLE_VARS), "STEP"),
    ("submit_ensemble.sh", ["6"], dict(ENSEMBLE_VARS), "STEP"),
]


@pytest.mark.slow
@pytest.mark.parametrize("script,positional,variables,missing", MISSING_CASES)
def test_missing_variables(tmp_path, script, positional, variables, missing):
  result = run_script(script, *positional, "--dry-run", "PROJECT=" + PROJECT,
                      *script_args(variables), tmp_path=tmp_path)
  assert result.returncode != 0
  assert re.search(r"\b%s\b" % re.escape(missing), result.stderr), result.stderr
  assert "gcloud" not in result.stdout


@pytest.mark.slow
def test_real_run_needs_gcloud(tmp_path):
  """Without --dry-run the scripts look for gcloud first and say so when it is missing."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in ("bash", "dirname", "basename", "tr", "grep", "cat", "date", "mktemp", "awk",
               "sed", "head"):
    found = shutil.which(tool)
    if found:
      os.symlink(found, str(bin_dir / tool))
  variables = {"submit_train.sh": script_args({"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2",
                                                "batch_size": "3"}),
               "submit_inference.sh": ["BUCKET_NAME=" + BUCKET, "ENSEMBLE_DIR=e"],
               "preflight.sh": ["BUCKET_NAME=" + BUCKET], "build_image.sh": []}
  for script, args in variables.items():
    result = run_script(script, "PROJECT=p", *args, tmp_path=tmp_path, path=str(bin_dir))
    assert result.returncode != 0
    assert "gcloud is not on PATH" in result.stderr, result.stderr
    assert result.stdout == ""
  result = run_script("submit_train.sh", "cs=1", "hs=2", "batch_size=3", tmp_path=tmp_path,
                      path=str(bin_dir))
  assert result.returncode != 0 and "BUCKET_NAME" in result.stderr


GCLOUD_STUB = """#!/usr/bin/env python3
# Records its arguments (and the job config it is given) instead of calling Google Cloud.
import json, os, sys
args = sys.argv[1:]
record = {"argv": args}
if args[:3] == ["config", "get-value", "project"]:
  print("stub-project")
for arg in args:
  if arg.startswith("--config="):
    record["config_text"] = open(arg.split("=", 1)[1]).read()
with open(os.environ["GCLOUD_LOG"], "a") as log:
  log.write(json.dumps(record) + "\\n")
  count = sum(1 for _ in open(os.environ["GCLOUD_LOG"]))  # calls before this one
if "create" in args and os.environ.get("GCLOUD_CREATE") == "fail":
  sys.stderr.write("ERROR: (gcloud.ai.custom-jobs.create) PERMISSION_DENIED: stub\\n")
  sys.exit(1)
if "create" in args and os.environ.get("GCLOUD_CREATE") != "quiet":
  # what gcloud ai custom-jobs create prints (on stderr)
  region = [a for a in args if a.startswith("--region=")][0].split("=", 1)[1]
  sys.stderr.write("Using endpoint [https://%s-aiplatform.googleapis.com/]\\n"
                   "CustomJob [projects/123456/locations/%s/customJobs/%d] is submitted "
                   "successfully.\\n" % (region, region, 7000 + count))
"""


@pytest.mark.slow
def test_real_run_runs_the_dry_run_commands(tmp_path):
  """Without --dry-run (gcloud replaced by a recording stub) the scripts run the commands that
  their dry run prints: same gcloud arguments, same job config; the project comes from gcloud's
  configuration when not given."""
  stub_dir = tmp_path / "stub"
  stub_dir.mkdir()
  (stub_dir / "gcloud").write_text(GCLOUD_STUB)
  os.chmod(str(stub_dir / "gcloud"), 0o755)
  log = tmp_path / "gcloud.log"
  variables = script_args({"BUCKET_NAME": BUCKET, "cs": "10", "hs": "400", "batch_size": "160",
                           "CKPTS": "170010 180010"})
  path = "%s:%s" % (stub_dir, os.environ.get("PATH", "/usr/bin:/bin"))
  result = run_script("submit_eval_loop.sh", *variables, tmp_path=tmp_path,
                      env={"GCLOUD_LOG": str(log)}, path=path)
  assert result.returncode == 0, result.stderr
  # stdout: only the commands that follow each job, with the ID gcloud printed for it.
  real = parse_dry_run(result.stdout)
  assert real["lines"] == [] and len(real["follow"]) == 2
  for index, (name, commands) in enumerate(real["follow"]):
    assert re.fullmatch(r"yt8m_eval_c10h400_%s_\d\dH\d\dM\d\dS" % ("170010", "180010")[index],
                        name)
    job_id = "projects/123456/locations/us-east1/customJobs/%d" % (7001 + index)
    assert commands == [["gcloud", "ai", "custom-jobs", verb, job_id, "--region=us-east1"]
                        for verb in ("stream-logs", "describe", "cancel")]
  assert "is submitted successfully" in result.stderr  # gcloud's own output stays visible
  calls = [json.loads(line) for line in log.read_text().splitlines()]
  assert calls[0]["argv"] == ["config", "get-value", "project"]
  calls = calls[1:]
  dry = dry_run("submit_eval_loop.sh", *variables, "PROJECT=stub-project", tmp_path=tmp_path,
                project=False)
  dry_calls = [argv[1:] for argv in dry["lines"] if argv[0] == "gcloud"]
  assert len(calls) == len(dry_calls) == 2

  def normalized(argv):  # temporary paths and job-name times vary
    text = " ".join(argv)
    text = re.sub(r"/yt8m-vertex\.\w+", r"/yt8m-vertex.X", text)
    return re.sub(r"_\d\dH\d\dM\d\dS", "_T", text).replace(str(tmp_path), "TMP")

  assert [normalized(call["argv"]) for call in calls] == [normalized(a) for a in dry_calls]
  for call, job in zip(calls, dry["jobs"]):
    real_config = load_yaml(call["config_text"])
    assert real_config == job["config"]
    assert real_config["workerPoolSpecs"][0]["containerSpec"]["imageUri"] == IMAGE.replace(
        PROJECT, "stub-project")


@pytest.mark.slow
def test_real_run_without_a_job_name_or_failing(tmp_path):
  """gcloud's create output without a customJobs/ID: the follow commands keep the JOB_ID
  placeholder and a note says how to find the job; a failing create stops the script with
  gcloud's own message and one line naming the command."""
  stub_dir = tmp_path / "stub"
  stub_dir.mkdir()
  (stub_dir / "gcloud").write_text(GCLOUD_STUB)
  os.chmod(str(stub_dir / "gcloud"), 0o755)
  path = "%s:%s" % (stub_dir, os.environ.get("PATH", "/usr/bin:/bin"))
  variables = script_args({"BUCKET_NAME": BUCKET, "cs": "1", "hs": "2", "batch_size": "3"})
  env = {"GCLOUD_LOG": str(tmp_path / "gcloud.log"), "GCLOUD_CREATE": "quiet"}
  result = run_script("submit_train.sh", "PROJECT=p", *variables, tmp_path=tmp_path, env=env,
                      path=path)
  assert result.returncode == 0, result.stderr
  out = parse_dry_run(result.stdout)
  assert [name for name, _ in out["follow"]] == ["yt8m_train_c1h2_3"]
  assert out["follow"][0][1][0] == ["gcloud", "ai", "custom-jobs", "stream-logs", "JOB_ID",
                                    "--region=us-east1"]
  assert "note: no customJobs/ID in gcloud's output: find the job with 'gcloud ai " \
      "custom-jobs list --region=us-east1 --filter=displayName=yt8m_train_c1h2_3'" in \
      result.stderr
  env["GCLOUD_CREATE"] = "fail"
  result = run_script("submit_train.sh", "PROJECT=p", *variables, tmp_path=tmp_path, env=env,
                      path=path)
  assert result.returncode == 2 and result.stdout == ""
  assert "PERMISSION_DENIED: stub" in result.stderr
  assert "submit_train.sh: error: command failed: gcloud --verbosity=debug ai custom-jobs " \
      "create --region=us-east1 --display-name=yt8m_train_c1h2_3" in result.stderr


# ---------------------------------------------------------------------------------------------
# The container image and the module flags

@pytest.mark.slow
def test_build_image_dry_run(tmp_path):
  result = run_script("build_image.sh", "--dry-run", "PROJECT=" + PROJECT, tmp_path=tmp_path)
  assert result.returncode == 0, result.stderr
  lines = [shlex.split(line) for line in result.stdout.splitlines()]
  assert lines[-2][:4] == ["gcloud", "artifacts", "repositories", "describe"]
  assert "--repository-format=docker" in lines[-2]
  context = lines[-1][-1]
  assert lines[-1] == ["gcloud", "--verbosity=debug", "builds", "submit",
                       "--project=" + PROJECT, "--tag=" + IMAGE, context]
  result = run_script("build_image.sh", "--dry-run", "--builder=docker",
                      "--image-uri=europe-west4-docker.pkg.dev/p2/repo/img:1", tmp_path=tmp_path)
  assert result.returncode == 0, result.stderr
  last = shlex.split(result.stdout.splitlines()[-1])
  assert last[:3] == ["docker", "build", "-t"] and last[-3:] == [
      "docker", "push", "europe-west4-docker.pkg.dev/p2/repo/img:1"]
  result = run_script("build_image.sh", "--dry-run", "--builder=kaniko", "PROJECT=p",
                      tmp_path=tmp_path)
  assert result.returncode != 0 and "--builder must be" in result.stderr


# Parses flag lists with the modules' own absl flag definitions, all modules in one process
# (TensorFlow is imported once): after each module, the flags and the project modules it
# brought in are dropped, so that the next module defines its flags afresh.
FLAG_CHECKER = """
import importlib, json, sys
from absl import app, flags
import tensorflow
FLAGS = flags.FLAGS
results = {}
for name, arg_lists in json.loads(sys.argv[1]):
  flags_before, modules_before = set(FLAGS), set(sys.modules)
  module = importlib.import_module(name)
  if callable(getattr(module, "define_flags", None)):  # flags defined under __main__
    module.define_flags()
  results[name] = {"file": module.__file__, "parsed": []}
  for argv in arg_lists:
    FLAGS.unparse_flags()
    FLAGS(["prog"] + argv)
    results[name]["parsed"].append({flag: FLAGS[flag].value for flag in
                                    ("netvlad_cluster_size", "ensemble_wts") if flag in FLAGS})
  for flag in set(FLAGS) - flags_before:
    delattr(FLAGS, flag)
  for loaded in set(sys.modules) - modules_before:
    if loaded.split(".")[0] == "youtube-8m":
      del sys.modules[loaded]
print(json.dumps(results))
"""


def original_module_flags(tmp_path):
  """{module: [module flags of each job the scripts submit]}, evaluator pool included."""
  runs = [("submit_train.sh", [], {"BUCKET_NAME": BUCKET, "cs": "100", "hs": "800",
                                   "batch_size": "160"}),
          ("submit_eval_loop.sh", [], {"BUCKET_NAME": BUCKET, "cs": "10", "hs": "400",
                                       "batch_size": "160", "CKPTS": "170010"}),
          ("submit_avg_range.sh", [], {"BUCKET_NAME": BUCKET, "cs": "10", "hs": "400",
                                       "batch_size": "160", "ckpt_start": "1",
                                       "ckpt_end": "2"}),
          ("submit_avg_select.sh", [], {"BUCKET_NAME": BUCKET, "cs": "10", "hs": "400",
                                        "batch_size": "160", "RANGE_NAME": "r",
                                        "CHECKPOINTS": "1,2"}),
          ("submit_eval_average.sh", [], {"BUCKET_NAME": BUCKET, "cs": "10", "hs": "400",
                                          "batch_size": "160", "checkpoint": "1_2"})]
  runs += [("submit_ensemble.sh", [str(step)], ENSEMBLE_VARS) for step in range(1, 6)]
  runs += [("submit_distributed_train.sh", ["--evaluator-count=1"], {
      "BUCKET_NAME": BUCKET, "cs": "10", "hs": "400", "batch_size": "160"})]
  runs += [("submit_inference.sh", [], {"BUCKET_NAME": BUCKET, "ENSEMBLE_DIR": "e",
                                        "output_model_tgz": BUCKET + "/e.tgz"}),
           ("submit_inference.sh", [], {"BUCKET_NAME": BUCKET,
                                        "input_model_tgz": BUCKET + "/e.tgz"})]
  by_module = {}
  for script, extra, variables in runs:
    for job in dry_run(script, *(extra + script_args(variables)), tmp_path=tmp_path)["jobs"]:
      for pool in job["config"]["workerPoolSpecs"]:
        spec = pool["containerSpec"]
        by_module.setdefault(spec["command"][2], []).append(spec["args"])
  assert sorted(by_module) == ["youtube-8m." + m for m in (
      "avg_checkpoints", "eval", "inference", "overwrite_float16_ckpt", "train")]
  return by_module


def _run(argv, **kwargs):
  result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
  assert result.returncode == 0, "%s failed:\n%s\n%s" % (argv[:4], result.stdout[-3000:],
                                                         result.stderr[-3000:])
  return result


@pytest.mark.slow
def test_container_install_step_in_a_fresh_venv(tmp_path):
  """What the image's Dockerfile does, without Docker: build_image.sh's dry-run build lines,
  pasted, build the wheel into the build context (nothing is written into the repo); a fresh
  venv gets cloud/container/install.sh, the Dockerfile's RUN step, with TensorFlow 2.21's CPU
  build (requirements.txt's) standing in for the image's tensorflow[and-cuda]: it installs the
  wheel with requirements-runtime.txt, and --cuda refuses the CPU-only build. The wheel
  installed is the one the OLDEST setuptools that pyproject.toml declares builds without build
  isolation (identical package files and requirements). From outside the repo, the installed
  package shows the model flags in `python -m youtube-8m.train --help`, its modules accept
  every flag list the submit scripts pass, and it trains a tiny model for 5 steps on data it
  generates."""
  timings = {}
  started = time.time()
  result = run_script("build_image.sh", "--dry-run", "PROJECT=" + PROJECT, tmp_path=tmp_path)
  assert result.returncode == 0, result.stderr
  build_lines = result.stdout.splitlines()[:2]
  context = shlex.split(result.stdout.splitlines()[-1])[-1]
  before = set(os.listdir(REPO_ROOT))
  for line in build_lines:
    _run(["bash", "-c", line], timeout=300)
  assert set(os.listdir(REPO_ROOT)) == before
  assert sorted(os.listdir(context)) == ["Dockerfile", "dist", "install.sh",
                                         "requirements-runtime.txt"]
  [wheel] = os.listdir(os.path.join(context, "dist"))
  assert wheel == "yt8m_netvlad_ensemble-%s-py3-none-any.whl" % VERSION
  with zipfile.ZipFile(os.path.join(context, "dist", wheel)) as archive:
    names = archive.namelist()
    metadata = archive.read("yt8m_netvlad_ensemble-%s.dist-info/METADATA" % VERSION).decode()
  for name in ("train.py", "eval.py", "__main__.py", "vocabulary.csv"):
    assert "youtube-8m/" + name in names
  assert "Requires-Python: <3.14,>=3.11" in metadata
  assert "Provides-Extra: tensorboard" in metadata
  # TensorFlow only in extras: the image keeps its own GPU build.
  assert not re.search(r"^Requires-Dist: tensorflow(?!.*extra ==)", metadata, re.M)
  timings["wheel"] = time.time() - started

  # The OLDEST setuptools pyproject.toml declares must build it, without build isolation (as
  # `pip install --no-build-isolation .` does with whatever setuptools is installed): the same
  # wheel, which is the one installed below.
  started = time.time()
  pyproject = open(os.path.join(REPO_ROOT, "pyproject.toml")).read()
  [oldest] = re.findall(r'^requires = \["setuptools>=([0-9.]+)"\]$', pyproject, re.M)
  build_venv = tmp_path / "build-venv"
  # A venv without pip of its own (ensurepip's install takes seconds): this process's pip
  # installs into it and builds with it (pip --python), so only setuptools, wheel and their
  # requirements are there.
  _run([sys.executable, "-m", "venv", "--without-pip", str(build_venv)], timeout=120)
  build_python = str(build_venv / "bin" / "python")
  build_pip = [sys.executable, "-m", "pip", "--python", build_python]
  # wheel: bdist_wheel of setuptools < 70.1 (pinned to the version of this project's .venv)
  _run(build_pip + ["install", "--quiet", "setuptools==" + oldest, "wheel==0.48.0"],
       timeout=300)
  assert _run([build_python, "-c", "import setuptools; print(setuptools.__version__)"]
              ).stdout.split(".")[:2] == (oldest + ".0").split(".")[:2]
  source = tmp_path / "source"
  source.mkdir()
  for name in ("pyproject.toml", "setup.py", "README.md"):
    shutil.copy(os.path.join(REPO_ROOT, name), str(source / name))
  shutil.copytree(os.path.join(REPO_ROOT, "youtube-8m"), str(source / "youtube-8m"),
                  ignore=shutil.ignore_patterns("__pycache__"))
  _run(build_pip + ["wheel", "--no-build-isolation", "--no-deps", "--wheel-dir",
                    str(tmp_path / "oldest"), str(source)], timeout=300)
  assert os.listdir(str(tmp_path / "oldest")) == [wheel]
  with zipfile.ZipFile(str(tmp_path / "oldest" / wheel)) as archive:
    assert sorted(archive.namelist()) == sorted(names)
    package = {name: archive.read(name) for name in names if name.startswith("youtube-8m/")}
    old_metadata = archive.read("yt8m_netvlad_ensemble-%s.dist-info/METADATA" % VERSION).decode()
  with zipfile.ZipFile(os.path.join(context, "dist", wheel)) as archive:
    assert package == {name: archive.read(name) for name in package}
  def requirements(text):  # Metadata-Version etc. differ between setuptools versions
    return sorted(line for line in text.splitlines() if re.match(
        r"(Name|Version|Requires-Python|Requires-Dist|Provides-Extra): ", line))

  assert requirements(old_metadata) == requirements(metadata)
  assert "Requires-Dist: google-cloud-storage<4,>=3.0" in requirements(metadata)
  shutil.copy(str(tmp_path / "oldest" / wheel), os.path.join(context, "dist", wheel))
  timings["wheel with setuptools " + oldest] = time.time() - started

  started = time.time()
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
  python = str(venv / "bin" / "python")
  tf_pin = [line.strip() for line in open(os.path.join(REPO_ROOT, "requirements.txt"))
            if line.startswith("tensorflow")]
  assert tf_pin == ["tensorflow-cpu==2.21.0"]
  # The image's command with the CPU build for tensorflow[and-cuda]: everything installs and
  # imports, then --cuda's library check refuses the CPU-only build (exit 2, one line) before it
  # writes the loader's configuration.
  conf = "/etc/ld.so.conf.d/yt8m-nvidia.conf"
  assert not os.path.exists(conf)
  install = ["bash", os.path.join(context, "install.sh"), "--tensorflow=" + tf_pin[0]]
  refused = subprocess.run(install + ["--cuda", python, context], capture_output=True,
                           text=True, timeout=900)
  assert refused.returncode == 2, refused.stderr[-3000:]
  assert "yt8m install check: TensorFlow 2.21." in refused.stdout
  assert [line for line in refused.stderr.splitlines() if line.startswith("ERROR: ")] == [
      "ERROR: TensorFlow 2.21.0 is a CPU-only build (is_cuda_build: False): it cannot use "
      "NVIDIA GPUs; fix: install TensorFlow's CUDA build (pip install '.[gpu]', i.e. "
      "tensorflow[and-cuda]; or use the image of cloud/container/Dockerfile), then run "
      "python -m youtube-8m.gpu_check"]
  assert not os.path.exists(conf)
  timings["install.sh --cuda"] = time.time() - started
  started = time.time()
  installed = _run(install + [python, context], timeout=600)
  assert "yt8m install check: TensorFlow 2.21." in installed.stdout
  timings["install.sh"] = time.time() - started
  bad = subprocess.run(["bash", os.path.join(context, "install.sh"), "--gpu", python, context],
                       capture_output=True, text=True, timeout=60)
  assert bad.returncode == 2 and bad.stderr == (
      "install.sh: unknown option '--gpu' (usage: install.sh [--tensorflow=REQUIREMENT] [--cuda] "
      "PYTHON DIR)\n")

  outside = tmp_path / "outside"
  outside.mkdir()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
  env.pop("VIRTUAL_ENV", None)
  started = time.time()
  help_run = subprocess.Popen([python, "-m", "youtube-8m.train", "--help"], cwd=str(outside),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  by_module = original_module_flags(tmp_path)
  flag_run = subprocess.Popen(
      [python, "-c", FLAG_CHECKER, json.dumps(sorted(by_module.items()))],
      cwd=str(outside), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  help_out, help_err = help_run.communicate(timeout=300)
  flag_out, flag_err = flag_run.communicate(timeout=300)
  site = str(venv / "lib")
  assert "--train_data_pattern" in help_out, help_err[-3000:]  # (absl's --help exits 1)
  for name in ("train_data_pattern", "netvlad_cluster_size", "frame_features",
               "ensemble_wts", "moe_prob_gating", "netvlad_relu"):
    # absl lists a boolean as --[no]name
    assert re.search(r"^\s*--(\[no\])?%s: " % name, help_out, re.M), name
  assert site in help_out  # the installed copy, not the repo's
  assert flag_run.returncode == 0, "a module rejects the scripts' flags:\n" + flag_err[-3000:]
  results = json.loads(flag_out.strip().splitlines()[-1])
  for module, result in results.items():
    assert result["file"].startswith(site), module
    assert len(result["parsed"]) == len(by_module[module])
  # The ensemble's repeated flags arrive in model order.
  ensemble = {"netvlad_cluster_size": [24, 32, 16, 32], "ensemble_wts": [0.39, 0.26, 0.21, 0.14]}
  assert ensemble in results["youtube-8m.train"]["parsed"]
  assert ensemble in results["youtube-8m.eval"]["parsed"]

  data, train_dir = outside / "data", outside / "train"
  _run([python, "-m", "youtube-8m.synthetic_data", "--output_dir=%s" % data, "--levels=frame",
        "--num_train_files=2", "--num_validate_files=1", "--num_test_files=0",
        "--videos_per_file=16", "--num_classes=40", "--min_frames=20", "--max_frames=40"],
       cwd=str(outside), env=env, timeout=300)
  trained = _run([python, "-m", "youtube-8m.train",
                  "--train_data_pattern=%s/frame/train*.tfrecord" % data,
                  "--train_dir=%s" % train_dir, "--frame_features", "--feature_names=rgb,audio",
                  "--feature_sizes=1024,128", "--num_classes=40", "--netvlad_cluster_size=4",
                  "--netvlad_hidden_size=16", "--iterations=10", "--batch_size=8",
                  "--max_steps=5", "--num_readers=1", "--num_epochs=100"],
                 cwd=str(outside), env=env, timeout=600)
  assert re.search(r"training step 5 \|", trained.stderr), trained.stderr[-3000:]
  assert os.path.isfile(str(train_dir / "model.ckpt-5.index"))
  timings["run"] = time.time() - started
  print("container install test timings (s): %s" % {k: round(v, 1) for k, v in timings.items()})
