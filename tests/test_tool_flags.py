"""Every tool defines its absl flags only when it runs: importing all of them in one process
works, and each tool's --help lists its own flags."""

import importlib

import pytest
from absl import flags

from conftest import run_cli

TOOLS = {"train": ["train_data_pattern", "gating", "compute_dtype", "allow_cpu_on_gpu_machine"],
         "eval": ["eval_data_pattern", "ensemble_wts", "compute_dtype"],
         "inference": ["input_data_pattern", "output_file", "compute_dtype"],
         "avg_checkpoints": ["checkpoints_start_end", "output_path"],
         "build_ensemble": ["checkpoints", "netvlad_cluster_size", "dry_run", "kernel_storage",
                            "candidates", "size_limit_bytes", "storages"],
         "ensemble_weights": ["search_seed", "ensemble_wts", "compute_dtype"],
         "overwrite_float16_ckpt": ["inference_model", "out_name"],
         "model_size": ["model_tgz", "limit_bytes"],
         "synthetic_data": ["output_dir", "difficulty"],
         "gpu_check": ["libraries_only", "print_library_dirs"]}


def test_every_tool_module_imports_in_one_process():
  before = set(flags.FLAGS)
  modules = [importlib.import_module("youtube-8m." + tool) for tool in TOOLS]
  assert all(callable(module.define_flags) for module in modules)
  assert set(flags.FLAGS) == before  # nothing defined at import


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_help_lists_the_tool_flags(tool):
  # absl's --help prints the usage to stdout and exits with status 1.
  result = run_cli(tool, "--help", check=False)
  assert "Traceback" not in result.stderr and "ERROR" not in result.stderr, result.stderr
  assert importlib.import_module("youtube-8m." + tool).__doc__.split("\n")[0] in result.stdout
  for name in TOOLS[tool]:
    assert "--" + name in result.stdout or "--[no]" + name in result.stdout, (tool, name)
  unknown = run_cli(tool, "--no_such_flag=1", check=False)
  assert unknown.returncode != 0 and "no_such_flag" in unknown.stderr, tool
  if tool in ("inference", "avg_checkpoints", "model_size"):  # no model flags there
    assert "gating" not in result.stdout
