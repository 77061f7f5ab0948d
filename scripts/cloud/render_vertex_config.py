#!/usr/bin/env python3
"""Writes the Vertex AI CustomJobSpec (YAML) of one job from a template (cloud/vertex-*.yaml).

    render_vertex_config.py TEMPLATE --image-uri=URI --python-module=youtube-8m.train \
        --output-dir=gs://... [--no-spot] [--replica-count=POOL:N ...] -- MODULE_FLAG ... \
        [@@pool=N @@python-module=MODULE MODULE_FLAG ...]

prints the job config on stdout. In every worker pool's containerSpec the one-line values of
``imageUri``, ``command`` (``["python3", "-m", MODULE]``) and ``args`` are replaced - by the
module and flags after ``@@pool=N`` for pool N (e.g. an evaluator running another module),
else by the first ones; ``outputUriPrefix`` (baseOutputDirectory) becomes --output-dir and,
with --no-spot, the scheduling ``strategy`` becomes STANDARD (on-demand VMs). Values are
written as JSON, which is valid YAML, so a flag value containing commas, quotes or spaces stays
one list item, exactly as given. Pools whose replicaCount ends up 0 are left out (only at the
end of the list: gcloud wants a containerSpec in every pool it is given). Comment lines are
dropped. Standard library only (the scripts must run where PyYAML is not installed), so the
template's layout is restricted: ``workerPoolSpecs:`` at column 0, as the last top-level key;
pools as ``- `` items at column 0; the keys above on one line each.

Every key of the template is checked against the field names of Vertex AI's v1 API
(CustomJobSpec, Scheduling, GcsDestination, WorkerPoolSpec, MachineSpec, ContainerSpec,
DiskSpec): gcloud would reject a misspelt key only at submission, after the image is built.
--service-account and --tensorboard add (or replace) the CustomJobSpec fields
``serviceAccount`` and ``tensorboard`` (a Vertex AI TensorBoard instance needs a service
account to upload with).
"""

import argparse
import json
import re
import sys

_KEY_RE = re.compile(r"^(?P<indent>\s*(?:- )?)(?P<key>[A-Za-z0-9]+):(?P<value>.*)$")
_ANY_KEY_RE = re.compile(r"^(?P<indent>\s*(?:- )?)(?P<key>[^\s:#][^:#]*?):(?:\s|$)")
_REPLACED = ("imageUri", "command", "args")
_HEADER_REPLACED = ("outputUriPrefix", "strategy", "restartJobOnWorkerRestart")

# Field names of the v1 REST API (projects.locations.customJobs): CustomJobSpec, and the
# messages under the keys the templates use. A key elsewhere is not checked.
CUSTOM_JOB_SPEC_FIELDS = frozenset((
    "persistentResourceId", "workerPoolSpecs", "scheduling", "serviceAccount", "network",
    "reservedIpRanges", "pscInterfaceConfig", "baseOutputDirectory",
    "protectedArtifactLocationId", "tensorboard", "enableWebAccess", "enableDashboardAccess",
    "experiment", "experimentRun", "models"))
NESTED_FIELDS = {  # (parent key, depth below the job spec / the pool) -> fields
    "scheduling": frozenset(("timeout", "restartJobOnWorkerRestart", "strategy",
                             "disableRetries", "maxWaitDuration")),
    "baseOutputDirectory": frozenset(("outputUriPrefix",)),
    "machineSpec": frozenset(("machineType", "acceleratorType", "acceleratorCount",
                              "tpuTopology", "reservationAffinity")),
    "containerSpec": frozenset(("imageUri", "command", "args", "env")),
    "diskSpec": frozenset(("bootDiskType", "bootDiskSizeGb")),
}
WORKER_POOL_SPEC_FIELDS = frozenset(("containerSpec", "pythonPackageSpec", "machineSpec",
                                     "replicaCount", "nfsMounts", "diskSpec"))
# google.protobuf.Duration in JSON/YAML: seconds with an "s" ("604800s" = 7 days).
_DURATION_RE = re.compile(r'^"?\d+(\.\d{1,9})?s"?$')


def check_field_names(lines, template, where, top_fields):
  """Fails on a key that is not a field of the v1 message it sits in: top_fields at the
  first level of `lines` (the job spec's header, or one pool), NESTED_FIELDS one level below
  the keys they name."""
  parents = []  # [(indent, key)] of the enclosing mappings
  for line in lines:
    match = _ANY_KEY_RE.match(line)
    if not match:
      continue
    indent, key = len(match.group("indent")), match.group("key").strip()
    while parents and parents[-1][0] >= indent:
      parents.pop()
    if not parents:
      allowed, message = top_fields, where
    elif len(parents) == 1 and parents[0][1] in NESTED_FIELDS:
      allowed, message = NESTED_FIELDS[parents[0][1]], "%s.%s" % (where, parents[0][1])
    else:
      allowed = None
    if allowed is not None and key not in allowed:
      fail("%s: %r is not a field of %s in Vertex AI's v1 API (known: %s)"
           % (template, key, message, ", ".join(sorted(allowed))))
    if parents and parents[-1][1] == "scheduling" and key == "timeout":
      value = line.split(":", 1)[1].split("#")[0].strip()
      if not _DURATION_RE.match(value):
        fail("%s: scheduling.timeout %r is not a duration in seconds such as \"604800s\""
             % (template, value))
    parents.append((indent, key))


def fail(message):
  sys.stderr.write("render_vertex_config.py: %s\n" % message)
  sys.exit(2)


def split_pools(lines, template):
  """Returns (header lines, [lines of pool 0, lines of pool 1, ...])."""
  header, pools, in_specs = [], [], False
  for line in lines:
    if not line.strip() or line.lstrip().startswith("#"):
      continue
    if not in_specs:
      header.append(line)
      if line.rstrip() == "workerPoolSpecs:":
        in_specs = True
      continue
    if line.startswith("- "):
      pools.append([line])
    elif line.startswith(" ") and pools:
      pools[-1].append(line)
    else:
      fail("%s: unexpected line after the worker pools (workerPoolSpecs must be the last "
           "top-level key): %r" % (template, line))
  if not in_specs:
    fail("%s: no 'workerPoolSpecs:' line at column 0 (is it a Vertex AI CustomJobSpec? "
         "the original's cloudml-gpu.yaml is an AI Platform config)" % template)
  if not pools:
    fail("%s: workerPoolSpecs has no '- ' items at column 0" % template)
  return header, pools


def render_header(header, template, output_dir, spot, job_fields=None):
  """job_fields: {top-level CustomJobSpec field: string value} to set (serviceAccount, ...)."""
  check_field_names(header, template, "CustomJobSpec", CUSTOM_JOB_SPEC_FIELDS)
  values = {"outputUriPrefix": json.dumps(output_dir),
            "strategy": "SPOT" if spot else "STANDARD"}
  job_fields = {key: json.dumps(value) for key, value in (job_fields or {}).items()}
  seen, out = set(), []
  for line in header:
    match = _KEY_RE.match(line)
    key = match.group("key") if match else None
    if key in values:
      line = "%s%s: %s" % (match.group("indent"), key, values[key])
    elif key in job_fields and not match.group("indent"):
      line = "%s: %s" % (key, job_fields.pop(key))
    if key in _HEADER_REPLACED:
      seen.add(key)
    if line.rstrip() == "workerPoolSpecs:":  # the header's last line: new fields go before
      out.extend("%s: %s" % item for item in sorted(job_fields.items()))
    out.append(line)
  missing = [key for key in _HEADER_REPLACED if key not in seen]
  if missing:
    fail("%s: no one-line %s before workerPoolSpecs (baseOutputDirectory.outputUriPrefix, "
         "scheduling.strategy and scheduling.restartJobOnWorkerRestart are needed: a preempted "
         "Spot VM restarts the job, which resumes from its checkpoints)"
         % (template, ", ".join(missing)))
  return out


def render(template, image_uri, python_module, module_args, output_dir, spot=True,
           replica_counts=None, pool_overrides=None, job_fields=None):
  """pool_overrides: {pool index: (python module, [module flags])}; job_fields: see
  render_header."""
  with open(template) as f:
    lines = f.read().splitlines()
  header, pools = split_pools(lines, template)
  header = render_header(header, template, output_dir, spot, job_fields)
  for index, pool in enumerate(pools):
    check_field_names([" " * 2 + line[2:] if line.startswith("- ") else line for line in pool],
                      template, "WorkerPoolSpec (pool %d)" % index, WORKER_POOL_SPEC_FIELDS)
  replica_counts = dict(replica_counts or {})
  pool_overrides = dict(pool_overrides or {})
  for pool_index in list(replica_counts) + list(pool_overrides):
    if not 0 <= pool_index < len(pools):
      fail("pool %d: %s has pools 0..%d" % (pool_index, template, len(pools) - 1))
  kept = []
  for index, pool in enumerate(pools):
    module, flags = pool_overrides.get(index, (python_module, module_args))
    values = {"imageUri": json.dumps(image_uri),
              "command": json.dumps(["python3", "-m", module]),
              "args": json.dumps(list(flags))}
    seen, replicas, out = set(), 1, []
    for line in pool:
      match = _KEY_RE.match(line)
      key = match.group("key") if match else None
      if key in values:
        line = "%s%s: %s" % (match.group("indent"), key, values[key])
        seen.add(key)
      elif key == "pythonPackageSpec":
        fail("%s: pool %d has a pythonPackageSpec: the jobs run in the project's container "
             "(containerSpec, see cloud/vertex-gpu.yaml)" % (template, index))
      elif key == "replicaCount":
        value = match.group("value").split("#")[0].strip()
        if index in replica_counts:
          value = str(replica_counts[index])
          line = "%sreplicaCount: %s" % (match.group("indent"), value)
        try:
          replicas = int(value)
        except ValueError:
          fail("%s: pool %d: replicaCount %r is not an integer" % (template, index, value))
      out.append(line)
    missing = [key for key in _REPLACED if key not in seen]
    if missing:
      fail("%s: pool %d has no one-line %s (each pool needs a containerSpec with imageUri, "
           "command and args)" % (template, index, ", ".join(missing)))
    if index in replica_counts and not any(_KEY_RE.match(l) and
                                           _KEY_RE.match(l).group("key") == "replicaCount"
                                           for l in pool):
      fail("%s: pool %d has no replicaCount line to set" % (template, index))
    kept.append((index, replicas, out))
  while kept and kept[-1][1] == 0:
    kept.pop()
  for index, replicas, _ in kept:
    if replicas < 1:
      fail("%s: pool %d has replicaCount %d but a later pool is used; only pools at the end "
           "of the list can be left out" % (template, index, replicas))
  if not kept:
    fail("%s: every pool has replicaCount 0" % template)
  body = header + [line for _, _, out in kept for line in out]
  return "\n".join(body) + "\n"


def main(argv):
  if "--" in argv:
    split = argv.index("--")
    argv, module_args = argv[:split], argv[split + 1:]
  else:
    module_args = []
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("template")
  parser.add_argument("--image-uri", required=True)
  parser.add_argument("--python-module", required=True)
  parser.add_argument("--output-dir", required=True,
                      help="baseOutputDirectory.outputUriPrefix (gs://)")
  parser.add_argument("--no-spot", action="store_true",
                      help="scheduling strategy STANDARD (on-demand) instead of SPOT")
  parser.add_argument("--replica-count", action="append", default=[], metavar="POOL:N")
  parser.add_argument("--service-account", default="",
                      help="CustomJobSpec.serviceAccount: the service account the job runs as")
  parser.add_argument("--tensorboard", default="",
                      help="CustomJobSpec.tensorboard: "
                      "projects/P/locations/L/tensorboards/ID (needs --service-account)")
  args = parser.parse_args(argv)
  if not args.output_dir.startswith("gs://"):
    fail("--output-dir must be a gs:// URI, got %r" % args.output_dir)
  job_fields = {}
  if args.service_account:
    if not re.match(r"^[^@\s]+@[^@\s]+\.[a-z]+$", args.service_account):
      fail("--service-account=%r is not a service account e-mail address (NAME@PROJECT"
           ".iam.gserviceaccount.com)" % args.service_account)
    job_fields["serviceAccount"] = args.service_account
  if args.tensorboard:
    if not re.match(r"^projects/[^/\s]+/locations/[^/\s]+/tensorboards/[0-9]+$",
                    args.tensorboard):
      fail("--tensorboard=%r is not a TensorBoard resource name "
           "(projects/PROJECT/locations/REGION/tensorboards/ID)" % args.tensorboard)
    if not args.service_account:
      fail("--tensorboard needs --service-account: Vertex AI uploads the job's TensorBoard "
           "logs only as a user-managed service account")
    job_fields["tensorboard"] = args.tensorboard
  overrides, current = {}, None
  default_args = []
  for token in module_args:
    if token.startswith("@@pool="):
      if not token[len("@@pool="):].isdigit():
        fail("%r: the pool must be a number" % token)
      current = int(token[len("@@pool="):])
      overrides[current] = (None, [])
    elif token.startswith("@@python-module="):
      if current is None:
        fail("@@python-module= before any @@pool=")
      overrides[current] = (token[len("@@python-module="):], overrides[current][1])
    elif token.startswith("@@"):
      fail("unknown control token %r" % token)
    elif current is None:
      default_args.append(token)
    else:
      overrides[current][1].append(token)
  for pool_index, (module, _) in overrides.items():
    if not module:
      fail("@@pool=%d has no @@python-module=" % pool_index)
  counts = {}
  for item in args.replica_count:
    match = re.match(r"^(\d+):(\d+)$", item)
    if not match:
      fail("--replica-count=%r is not POOL:N" % item)
    counts[int(match.group(1))] = int(match.group(2))
  sys.stdout.write(render(args.template, args.image_uri, args.python_module, default_args,
                          args.output_dir, not args.no_spot, counts, overrides, job_fields))


if __name__ == "__main__":
  main(sys.argv[1:])
