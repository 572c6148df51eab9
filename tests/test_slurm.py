"""profiles/slurm on a real Slurm cluster: every job through sbatch, training on the GPU
partition with its GPU request, the K cutout shards as K Slurm jobs, the outputs equal to a
local run's, and training that resumes after its Slurm job is cancelled.

The cluster is a one-node Slurm (Debian packages) that tests/slurm/cluster.sh installs and
starts on localhost, with one declared GPU; it needs root on Debian/Ubuntu. Where it cannot
run, the Slurm tests are skipped with the reason, except under CI (CI=true), where they fail.
The daemons are stopped when the module's tests are done.

One run does it all (module fixture `slurm_run`): the tiny configuration's whole DAG (`rule
all`) through `snakemake --profile profiles/slurm --profile tests/slurm/profile` (the second
profile only adapts polling, accounts and threads to the test cluster), while the same DAG
runs locally with `--cores 2` in another directory for comparison. As soon as training has
written its first epoch's resume state, the test cancels the training job (`scancel`); the
profile's `retries` resubmit it with attempt 2 (and twice the wall time), and training must
continue from the saved epoch. Slurm's own records are read afterwards: `squeue -t all` and
`scontrol show job` (finished jobs stay an hour, MinJobAge=3600) and slurmctld's job
completion log (jobcomp/filetxt).

Outputs compared with the local run: every file under resources/ and results/ must be
byte-identical (the U-Net file too: training on the CPU is bitwise reproducible, also when
resumed), except PDFs (creation date) and training.csv (per-epoch timings), whose other
columns must be equal. Both runs use 2 threads per job (max-threads in the CI profile).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePath

import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, TINY_CONFIG, job_counts

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
STATE = Path(os.environ.get("DUSTPRED_SLURM_STATE", "/run/dustpred-slurm"))
CONFIGS = [REPO / "config" / "config.yaml", TINY_CONFIG]
# On top of the tiny config, for both runs: a fixed number of epochs, enough for training to
# be cancelled after its first and still have epochs left to resume (and few, to stay fast).
# One training job (the cancel-and-resume test follows it): paper_unet left out.
EXTRA_CONFIG = {"unet": {"epochs": 6}, "experiments": {"paper_unet": False}}
PROFILES = [
    "--profile",
    str(REPO / "profiles" / "slurm"),
    "--profile",
    str(REPO / "tests/slurm/profile"),
]
WORKFLOW_PROFILE = REPO / "profiles" / "default" / "config.yaml"
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
# Wall-clock limits (s): the Slurm run of the whole tiny DAG, and the local one beside it.
SLURM_RUN_TIMEOUT = 420
LOCAL_RUN_TIMEOUT = 420
# The training job of the tiny config, and where it keeps its per-epoch resume state.
EXPERIMENT, SEED = "baseline", 0
RESUME_STATE = f"results/models/{EXPERIMENT}/seed{SEED}/resume/state.pt"
TRAIN_LOG = f"logs/train_unet/{EXPERIMENT}/seed{SEED}.log"
# Every file under these directories must be byte-identical between the Slurm and the local
# run, except NOT_BYTE_EQUAL: PDFs carry their creation date, and training.csv records seconds
# and samples/s per epoch (compared without those columns). Everything else (synthetic maps,
# preprocess stack/mask/oracle, cutout shards, linear weights, the U-Net file, predictions,
# tables, PNGs, summary) is deterministic, threads being equal.
COMPARED_DIRS = ["resources", "results"]
NOT_BYTE_EQUAL = [
    "*.pdf",
    "results/models/*/seed*/training.csv",
    "results/models/*/seed*/crossfit/training.csv",
]
TIMING_COLUMNS = ["samples_per_s", "seconds"]


def rules_of_workflow() -> set[str]:
    """Names of the rules that run something (all but `all`), from workflow/rules/*.smk."""
    names = set()
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        names |= set(re.findall(r"^(?:rule|checkpoint) (\w+):", path.read_text(), re.M))
    return names - {"all"}


# ----------------------------------------------------------------------------------------
# The profiles themselves (no cluster needed).


def test_workflow_profile_sets_threads_and_resources_of_exactly_the_workflow_rules():
    # Snakemake accepts set-threads/set-resources for rules that do not exist, so a renamed
    # rule would silently lose its resources.
    profile = yaml.safe_load(WORKFLOW_PROFILE.read_text())
    rules = rules_of_workflow()
    for key in ("set-threads", "set-resources"):
        listed = set(profile[key])
        assert listed == rules, (
            f"profiles/default/config.yaml `{key}`: missing rules {sorted(rules - listed)}, "
            f"unknown rules {sorted(listed - rules)}"
        )
    for rule, resources in profile["set-resources"].items():
        assert {"mem_mb", "runtime"} <= set(resources), rule


def test_training_asks_for_a_gpu_and_more_wall_time_on_each_attempt():
    train = yaml.safe_load(WORKFLOW_PROFILE.read_text())["set-resources"]["train_unet"]
    assert train["gpu"] == 1 and train["cpus_per_gpu"] >= 1
    runtime = [eval(str(train["runtime"]), {"attempt": a}) for a in (1, 2, 3)]
    assert runtime[0] < runtime[1] < runtime[2]


def test_slurm_profile_leaves_per_rule_resources_to_the_workflow_profile():
    # A workflow profile's `set-resources`/`default-resources` replace the global profile's
    # whole key; set-resources here would be silently ignored.
    slurm = yaml.safe_load(SLURM_PROFILE.read_text())
    assert "set-resources" not in slurm and "set-threads" not in slurm
    assert "default-resources" not in yaml.safe_load(WORKFLOW_PROFILE.read_text())
    assert slurm["executor"] == "slurm" and slurm["retries"] >= 1
    partitions = yaml.safe_load(
        (SLURM_PROFILE.parent / slurm["slurm-partition-config"]).read_text()
    )
    gpu_partitions = [p for p, lim in partitions["partitions"].items() if lim.get("max_gpu", 0) > 0]
    assert gpu_partitions and len(gpu_partitions) < len(partitions["partitions"])


@pytest.mark.workflow
def test_paper_dry_run_shows_the_training_job_with_its_gpu_request(tmp_path):
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n"]
    cmd += ["--profile", str(REPO / "profiles" / "slurm")]
    cmd += ["--configfile", str(REPO / "config/config.yaml"), str(REPO / "config/paper.yaml")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    blocks = [b for b in out.split("\n\n") if re.search(r"^rule train_unet:", b, re.M)]
    assert blocks, out[-3000:]
    print(blocks[0])
    resources = re.search(r"resources: (.*)", blocks[0]).group(1)
    assert "gpu=1" in resources.split(", ") and "cpus_per_gpu=8" in resources
    assert "runtime=120" in resources.split(", ")


# ----------------------------------------------------------------------------------------
# The cluster.


def _cannot_run_reason() -> str | None:
    if sys.platform != "linux":
        return f"needs Linux (found {sys.platform})"
    if os.geteuid() != 0:
        return f"needs root to install and start Slurm (running as uid {os.geteuid()})"
    installed = all(shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and not (shutil.which("apt-get") and Path("/etc/debian_version").exists()):
        return "Slurm is not installed and this is not Debian/Ubuntu with apt-get"
    return None


def _cluster(command: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLUSTER), command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    """A running one-node Slurm cluster; stopped (every daemon it started) afterwards."""
    reason = _cannot_run_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Slurm tests must run in CI but cannot: {reason}")
        pytest.skip(f"Slurm tests skipped: {reason}")
    for command in ("install", "stop", "start"):  # stop: daemons an interrupted run left
        done = _cluster(command)
        assert done.returncode == 0, f"cluster.sh {command}:\n{done.stdout}\n{done.stderr}"
    yield STATE
    done = _cluster("stop", timeout=120)
    print(done.stdout, done.stderr)
    assert done.returncode == 0, f"cluster.sh stop:\n{done.stdout}\n{done.stderr}"
    for name in ("munge/munged.pid", "slurmctld.pid", "slurmd.pid"):
        assert not (STATE / name).exists(), f"{name} left behind"


@dataclass
class SlurmJob:
    jobid: int
    state: str
    partition: str
    rule: str
    wildcards: str
    time_limit_min: int
    tres_per_job: str


@dataclass
class SlurmRun:
    workdir: Path
    local: Path
    output: str
    wall_s: float
    jobs: list[SlurmJob]
    jobcomp: dict[int, str]
    cancelled: int | None
    squeue: str

    def of_rule(self, rule: str) -> list[SlurmJob]:
        return [job for job in self.jobs if job.rule == rule]


def _minutes(limit: str) -> int:
    """Slurm time limit [D-]HH:MM:SS or MM:SS -> minutes."""
    days, _, hms = limit.rpartition("-")
    parts = [int(p) for p in hms.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 1440 + parts[0] * 60 + parts[1] + (parts[2] > 0)


def _slurm_jobs() -> list[SlurmJob]:
    """Every job slurmctld knows (finished ones included), with the rule from the comment
    the executor plugin gives each job (rule_<name>[_wildcards_<values>])."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%i|%T|%P|%k|%l"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = []
    for line in out.splitlines():
        jobid, state, partition, comment, limit = line.split("|")
        m = re.fullmatch(r"rule_(\w+?)(?:_wildcards_(.*))?", comment)
        rule, wildcards = (m.group(1), m.group(2) or "") if m else ("?", comment)
        show = subprocess.run(
            ["scontrol", "show", "job", "-o", jobid], capture_output=True, text=True, check=True
        ).stdout
        tres = re.search(r"TresPerJob=(\S*)", show)
        jobs.append(
            SlurmJob(
                int(jobid),
                state,
                partition,
                rule,
                wildcards,
                _minutes(limit),
                tres.group(1) if tres else "",
            )
        )
    return sorted(jobs, key=lambda job: job.jobid)


def _jobcomp() -> dict[int, str]:
    """JobId -> JobState from slurmctld's job completion log."""
    text = (STATE / "jobcomp.log").read_text() if (STATE / "jobcomp.log").exists() else ""
    return {
        int(m.group(1)): m.group(2) for m in re.finditer(r"JobId=(\d+) .*?JobState=(\S+)", text)
    }


def _cancel_training_when_resumable(workdir: Path, proc: subprocess.Popen) -> int | None:
    """Wait for training's first resume state, then scancel the running training job.
    Returns the cancelled Slurm job id (None if training ended before it could be)."""
    state = workdir / RESUME_STATE
    while proc.poll() is None:
        if state.exists():
            running = subprocess.run(
                ["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split("\n")
            for line in running:
                if line.split(" ")[-1].startswith("rule_train_unet_"):
                    jobid = int(line.split(" ")[0])
                    subprocess.run(["scancel", str(jobid)], check=True)
                    return jobid
        time.sleep(0.1)
    return None


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> SlurmRun:
    workdir = tmp_path_factory.mktemp("slurm_run")
    local = tmp_path_factory.mktemp("local_run")
    extra = tmp_path_factory.mktemp("config") / "slurm-test.yaml"
    extra.write_text(yaml.safe_dump(EXTRA_CONFIG))
    configs = ["--configfile", *map(str, CONFIGS), str(extra)]
    base = [SNAKEMAKE, "-s", str(REPO / "Snakefile")]
    # The local reference runs beside the Slurm run, which mostly waits on polls; niced, so
    # that the Slurm jobs (the longer path) get the CPU first.
    local_log = open(local / "snakemake.out", "w")  # noqa: SIM115 (closed below)
    local_proc = subprocess.Popen(
        [
            "nice",
            "-n",
            "10",
            "timeout",
            "--kill-after=15",
            str(LOCAL_RUN_TIMEOUT),
            *base,
            "--directory",
            str(local),
            "--cores",
            "2",
            *configs,
        ],
        stdout=local_log,
        stderr=subprocess.STDOUT,
    )
    t0 = time.monotonic()
    slurm_log = open(workdir / "snakemake.out", "w")  # noqa: SIM115
    # `timeout`: a snakemake that lost track of its jobs polls forever and ignores SIGTERM.
    proc = subprocess.Popen(
        [
            "timeout",
            "--kill-after=15",
            str(SLURM_RUN_TIMEOUT),
            *base,
            "--directory",
            str(workdir),
            *PROFILES,
            *configs,
        ],
        stdout=slurm_log,
        stderr=subprocess.STDOUT,
    )
    cancelled = _cancel_training_when_resumable(workdir, proc)
    proc.wait()
    wall = time.monotonic() - t0
    local_proc.wait()
    slurm_log.close()
    local_log.close()
    output = (workdir / "snakemake.out").read_text()
    local_output = (local / "snakemake.out").read_text()
    assert proc.returncode == 0, f"Slurm run failed ({proc.returncode}):\n{output[-6000:]}"
    assert local_proc.returncode == 0, f"local run failed:\n{local_output[-4000:]}"
    squeue = subprocess.run(
        ["squeue", "-t", "all", "-o", "%.5i %.9P %.10T %.10l %.8M %k"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return SlurmRun(workdir, local, output, wall, _slurm_jobs(), _jobcomp(), cancelled, squeue)


@pytest.mark.slurm
def test_every_job_of_the_dag_ran_as_a_slurm_job(slurm_run):
    print(f"\nSlurm run of the tiny DAG: {slurm_run.wall_s:.0f} s")
    print(f"$ squeue -t all\n{slurm_run.squeue}")
    print(f"{'JOBID':>5} {'STATE':10} {'PARTITION':9} {'TIMELIMIT':>9} {'TRES_PER_JOB':14} RULE")
    for job in slurm_run.jobs:
        print(
            f"{job.jobid:>5} {job.state:10} {job.partition:9} {job.time_limit_min:>7} m "
            f"{job.tres_per_job or '-':14} {job.rule} {job.wildcards}"
        )
    planned = job_counts(slurm_run.output)
    planned.pop("all")
    completed: dict[str, int] = {}
    for job in slurm_run.jobs:
        if job.state == "COMPLETED":
            completed[job.rule] = completed.get(job.rule, 0) + 1
    assert completed == planned
    # slurmctld's own completion record agrees, job by job.
    assert {job.jobid: job.state for job in slurm_run.jobs} == slurm_run.jobcomp
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", slurm_run.output)
    assert sorted(map(int, submitted)) == [job.jobid for job in slurm_run.jobs]


# The rules that ask for a GPU: both trainings and the template's batched inference.
GPU_RULES = ("train_unet", "train_unet_crossfit", "template")


@pytest.mark.slurm
def test_training_ran_on_the_gpu_partition_with_one_gpu(slurm_run):
    gpu = [job for rule in GPU_RULES for job in slurm_run.of_rule(rule)]
    assert slurm_run.of_rule("train_unet")
    assert all(j.partition == "gpu" and j.tres_per_job == "gres:gpu:1" for j in gpu)
    others = [job for job in slurm_run.jobs if job.rule not in GPU_RULES]
    assert all(job.partition == "cpu" and "gpu" not in job.tres_per_job for job in others)


@pytest.mark.slurm
def test_cutout_shards_ran_as_one_slurm_job_each(slurm_run):
    k = yaml.safe_load(CONFIGS[1].read_text())["cutouts"]["shards"]
    shards = slurm_run.of_rule("cutout_shard")
    assert k >= 2
    assert sorted(job.wildcards.rsplit("_", 1)[-1] for job in shards) == [
        f"{i}-of-{k}" for i in range(1, k + 1)
    ]
    assert all(job.state == "COMPLETED" for job in shards)


@pytest.mark.slurm
def test_cancelled_training_was_resubmitted_with_more_time_and_resumed(slurm_run):
    assert slurm_run.cancelled is not None, "training ended before its job could be cancelled"
    train = slurm_run.of_rule("train_unet")
    assert [(j.jobid, j.state) for j in train][:1] == [(slurm_run.cancelled, "CANCELLED")]
    assert [j.state for j in train] == ["CANCELLED", "COMPLETED"]
    assert train[1].time_limit_min == 2 * train[0].time_limit_min  # attempt 2
    log = (slurm_run.workdir / TRAIN_LOG).read_text()
    m = re.search(r"resuming from \S+ after epoch (\d+)", log)
    assert m, log[-3000:]
    k = int(m.group(1))
    after = log[m.end() :]
    epochs = [int(e) for e in re.findall(r"epoch (\d+)/\d+: lr", after)]
    history = pd.read_csv(
        slurm_run.workdir / f"results/models/{EXPERIMENT}/seed{SEED}/training.csv"
    )
    print(f"\ncancelled Slurm job {train[0].jobid}; resubmitted as {train[1].jobid}: {m.group(0)}")
    assert k >= 1 and epochs == list(range(k + 1, len(history) + 1))
    assert history["epoch"].tolist() == list(range(1, EXTRA_CONFIG["unet"]["epochs"] + 1))
    assert not (slurm_run.workdir / RESUME_STATE).exists()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slurm
def test_outputs_are_byte_identical_to_a_local_run(slurm_run):
    def files(root: Path) -> set[str]:
        return {
            str(path.relative_to(root))
            for top in COMPARED_DIRS
            for path in (root / top).rglob("*")
            if path.is_file()
        }

    local = files(slurm_run.local)
    assert files(slurm_run.workdir) == local
    compared = sorted(
        rel for rel in local if not any(PurePath(rel).match(p) for p in NOT_BYTE_EQUAL)
    )
    differ = [
        rel
        for rel in compared
        if _sha256(slurm_run.workdir / rel) != _sha256(slurm_run.local / rel)
    ]
    assert not differ
    assert any(rel.endswith("unet.pt") for rel in compared)
    print(f"\n{len(compared)} of {len(local)} outputs compared, all byte-identical")


@pytest.mark.slurm
def test_resumed_training_history_equals_the_uninterrupted_local_one(slurm_run):
    rel = f"results/models/{EXPERIMENT}/seed{SEED}/training.csv"
    slurm = pd.read_csv(slurm_run.workdir / rel).drop(columns=TIMING_COLUMNS)
    local = pd.read_csv(slurm_run.local / rel).drop(columns=TIMING_COLUMNS)
    pd.testing.assert_frame_equal(slurm, local, check_exact=True)


@pytest.mark.slurm
def test_training_falls_back_to_the_cpu_when_its_gpu_job_sees_no_usable_gpu(slurm_run, tmp_path):
    # Slurm sets CUDA_VISIBLE_DEVICES=0 in a --gpus=1 job; the test node's "GPU" is /dev/null,
    # so torch sees none, and training must have run on the CPU rather than failed.
    log = (slurm_run.workdir / TRAIN_LOG).read_text()
    assert re.search(r"epochs, on cpu x 1", log), log[:2000]
    probe = (
        "import os, torch; "
        "print('CUDA_VISIBLE_DEVICES=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'), "
        "'cuda_available=' + str(torch.cuda.is_available()))"
    )
    out = tmp_path / "probe.out"
    cmd = ["sbatch", "--wait", "-p", "gpu", "--gpus=1", "--mem=1000", "-t", "5"]
    cmd += ["-o", str(out), "--wrap", f'srun -n1 {sys.executable} -c "{probe}"']
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "CUDA_VISIBLE_DEVICES=0 cuda_available=False" in text, text
