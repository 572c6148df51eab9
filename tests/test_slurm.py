"""profiles/slurm on a real Slurm cluster: every job but the local rules through sbatch, the K
cutout shards as K Slurm jobs, the outputs equal to a local run's, training that resumes after
its Slurm job is cancelled, and the README's GPU recipes (--gpus, GRES with a QoS and a named
partition) submitting what they say, with the GPU job stopping without CUDA.

The cluster is a one-node Slurm (Debian packages) that tests/slurm/cluster.sh starts on
localhost, with four declared GPUs; it needs root. It installs the packages (apt-get) only when
DUSTPRED_SLURM_INSTALL=1, which .ci/run sets. Where it cannot run, the Slurm tests are skipped
with the reason, except when DUSTPRED_SLURM_INSTALL=1 asked for them, where they fail.
The daemons are stopped when the module's tests are done.

One run does it all (module fixture `slurm_run`): the tiny configuration's DAG (`rule all`)
with its first experiment alone (tests/slurm/one_experiment.yaml: every rule, 29 jobs) through
`snakemake --profile profiles/slurm --profile tests/slurm/profile` (the second profile only
adapts polling, accounts and threads to the test cluster), compared with the whole tiny DAG
run locally with `--cores 2` (the session's shared `tiny_run`, which another worker runs
meanwhile: the Slurm run does not wait for it). As soon as training has
written its first epoch's resume state, the test cancels the training job (`scancel`); the
profile's `retries` resubmit it with attempt 2 (and twice the wall time), and training must
continue from the saved epoch. Slurm's own records are read afterwards: `squeue -t all` and
`scontrol show job` (finished jobs stay an hour, MinJobAge=3600) and slurmctld's job
completion log (jobcomp/filetxt).

Outputs compared with the local run: every file the Slurm run wrote under resources/ and
results/ must be byte-identical to the local run's (the U-Net file too: training on the CPU
is bitwise reproducible, also when resumed), except PDFs (creation date), training.csv
(per-epoch timings; its other columns must be equal) and the summary tables, which list the
experiments run; the local run's other files are the second experiment's. Both runs use 2
threads per job (max-threads in the CI profile).
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
from conftest import REAL_PATH, REPO, SNAKEMAKE, TINY_CONFIG, job_counts

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
STATE = Path(os.environ.get("DUSTPRED_SLURM_STATE", "/run/dustpred-slurm"))
CONFIGS = [REPO / "config" / "config.yaml", TINY_CONFIG, REPO / "tests/slurm/one_experiment.yaml"]
# The local run's second experiment, which the Slurm run leaves out.
LEFT_OUT = "paper_unet"
# The polarisation stages' outputs (tests/slurm/one_experiment.yaml leaves them out).
POLARISATION_OUTPUTS = [
    "resources/synthetic/dust_qu*",
    "results/preprocess_qu/*",
    "results/cutouts_qu/*/*",
    "results/models/*/qu_baselines.json",
    "results/models/*/seed*/*_qu_*",
    "results/predictions_qu/*/*/*",
    "results/tables/*/seed*/qu_*",
    "results/figures/*/seed*/qu_*",
]
# The tiny config's epochs: enough for training to be cancelled after its first and still
# have epochs left to resume (and few, to stay fast).
EPOCHS = yaml.safe_load(TINY_CONFIG.read_text())["unet"]["epochs"]
PROFILES = [
    "--profile",
    str(REPO / "profiles" / "slurm"),
    "--profile",
    str(REPO / "tests/slurm/profile"),
]
WORKFLOW_PROFILE = REPO / "profiles" / "default" / "config.yaml"
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
# Wall-clock limit (s) of the Slurm run of the whole tiny DAG.
SLURM_RUN_TIMEOUT = 600
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
# What lists every experiment run, and so differs between one and two experiments.
EXPERIMENT_LISTS = ["results/summary.txt", "results/tables/summary*"]
TIMING_COLUMNS = ["samples_per_s", "seconds"]


def rules_of_workflow() -> set[str]:
    """Names of the rules that run something (all but `all`), from workflow/rules/*.smk."""
    names = set()
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        names |= set(re.findall(r"^(?:rule|checkpoint) (\w+):", path.read_text(), re.M))
    return names - {"all"}


# ----------------------------------------------------------------------------------------
# The profiles themselves (no cluster needed).


def rule_blocks() -> dict[str, str]:
    """Rule name -> its source text, for the rules of workflow/rules/*.smk (not `use rule`)."""
    blocks = {}
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=\S)", path.read_text()):
            found = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if found:
                blocks[found[1]] = block
    return blocks


def test_every_rule_declares_its_threads_memory_and_wall_time():
    blocks = rule_blocks()
    assert set(blocks) - {"all"} == rules_of_workflow() and len(blocks) > 20
    for rule, block in blocks.items():
        if rule == "all":
            continue
        assert re.search(r"^    threads: \d+$", block, re.M), f"rule {rule}: no threads"
        assert "mem_mb=mem_mb(" in block and "runtime=runtime(" in block, rule


def test_the_workflow_profile_holds_no_per_rule_resources():
    # A workflow profile's keys replace a user profile's: set-resources there would drop every
    # value the user's cluster profile sets.
    profile = yaml.safe_load(WORKFLOW_PROFILE.read_text())
    assert not {"set-threads", "set-resources", "default-resources"} & set(profile)


def test_slurm_profile_sends_gpu_jobs_to_a_gpu_partition_and_retries():
    slurm = yaml.safe_load(SLURM_PROFILE.read_text())
    assert "set-resources" not in slurm and "set-threads" not in slurm
    assert slurm["executor"] == "slurm" and slurm["retries"] >= 1
    partitions = yaml.safe_load(
        (SLURM_PROFILE.parent / slurm["slurm-partition-config"]).read_text()
    )
    gpu_partitions = [p for p, lim in partitions["partitions"].items() if lim.get("max_gpu", 0) > 0]
    assert gpu_partitions and len(gpu_partitions) < len(partitions["partitions"])


def dry_run_resources(tmp_path: Path, *configs: Path | str) -> dict[str, str]:
    """Rule -> the resources line of its first job in a dry run through profiles/slurm."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n"]
    cmd += ["--profile", str(REPO / "profiles" / "slurm"), "--configfile"]
    cmd += [str(REPO / "config/config.yaml"), *map(str, configs)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    found = {}
    for block in out.split("\n\n"):
        rule = re.search(r"^rule (\w+):", block, re.M)
        resources = re.search(r"resources: (.*)", block)
        if rule and resources:
            found.setdefault(rule[1], resources[1])
    return found


@pytest.mark.workflow
def test_paper_dry_run_shows_the_gpu_jobs_with_their_gpu_request(tmp_path):
    resources = dry_run_resources(tmp_path, REPO / "config/paper.yaml")
    for rule in GPU_RULES:
        assert "gpu=1" in resources[rule].split(", "), (rule, resources[rule])
    train = resources["train_unet"].split(", ")
    assert "cpus_per_gpu=8" in train and "runtime=120" in train
    assert "gpu=1" not in resources["fit_linear"] and "gpu=1" not in resources["evaluate"]


@pytest.mark.workflow
def test_a_config_that_runs_the_unet_on_the_cpu_asks_for_no_gpu(tmp_path):
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text(yaml.safe_dump({"unet": {"device": "cpu"}, "template": {"device": "cpu"}}))
    resources = dry_run_resources(tmp_path, cpu)
    for rule in GPU_RULES:
        assert "gpu=0" in resources[rule].split(", "), (rule, resources[rule])


# ----------------------------------------------------------------------------------------
# The cluster.


# Installing Slurm (apt-get, as root) is opt-in: .ci/run sets this; `make test` on a user's
# machine never installs system packages.
INSTALL_VARIABLE = "DUSTPRED_SLURM_INSTALL"


def _installed() -> bool:
    return all(shutil.which(t) for t in ("slurmctld", "slurmd", "sbatch", "munged"))


def _cannot_run_reason() -> str | None:
    if sys.platform != "linux":
        return f"needs Linux (found {sys.platform})"
    if os.geteuid() != 0:
        return f"needs root to start Slurm (running as uid {os.geteuid()})"
    if _installed():
        return None
    if os.environ.get(INSTALL_VARIABLE) != "1":
        return (
            f"Slurm is not installed; {INSTALL_VARIABLE}=1 lets tests/slurm/cluster.sh install it"
        )
    if not (shutil.which("apt-get") and Path("/etc/debian_version").exists()):
        return "Slurm is not installed and this is not Debian/Ubuntu with apt-get"
    return None


def _cluster(command: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLUSTER), command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster():
    """A running one-node Slurm cluster; stopped (every daemon it started) afterwards."""
    reason = _cannot_run_reason()
    if reason:
        if os.environ.get(INSTALL_VARIABLE) == "1":
            pytest.fail(f"Slurm tests asked for ({INSTALL_VARIABLE}=1) but cannot run: {reason}")
        pytest.skip(f"Slurm tests skipped: {reason}")
    stub_path = os.environ["PATH"]
    os.environ["PATH"] = REAL_PATH  # the real scontrol (tests/conftest.py)
    commands = ("stop", "start") if _installed() else ("install", "stop", "start")
    for command in commands:  # stop: daemons an interrupted run left
        done = _cluster(command)
        assert done.returncode == 0, f"cluster.sh {command}:\n{done.stdout}\n{done.stderr}"
    yield STATE
    done = _cluster("stop", timeout=120)
    os.environ["PATH"] = stub_path
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
                if line.split(" ")[-1] == f"rule_train_unet_wildcards_{EXPERIMENT}_{SEED}":
                    jobid = int(line.split(" ")[0])
                    subprocess.run(["scancel", str(jobid)], check=True)
                    return jobid
        time.sleep(0.1)
    return None


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> SlurmRun:
    workdir = tmp_path_factory.mktemp("slurm_run")
    configs = ["--configfile", *map(str, CONFIGS)]
    base = [SNAKEMAKE, "-s", str(REPO / "Snakefile")]
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
    slurm_log.close()
    output = (workdir / "snakemake.out").read_text()
    assert proc.returncode == 0, f"Slurm run failed ({proc.returncode}):\n{output[-6000:]}"
    squeue = subprocess.run(
        ["squeue", "-t", "all", "-o", "%.5i %.9P %.10T %.10l %.8M %k"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs, jobcomp = _slurm_jobs(), _jobcomp()
    return SlurmRun(workdir, output, wall, jobs, jobcomp, cancelled, squeue)


def local_rules() -> set[str]:
    """The rules config/config.yaml runs on the submitting node (cluster.local_rules)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return set(config["cluster"]["local_rules"])


@pytest.mark.slurm
def test_every_job_but_the_local_rules_ran_as_a_slurm_job(slurm_run):
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
    assert completed == {rule: n for rule, n in planned.items() if rule not in local_rules()}
    # slurmctld's own completion record agrees, job by job.
    assert {job.jobid: job.state for job in slurm_run.jobs} == slurm_run.jobcomp
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", slurm_run.output)
    assert sorted(map(int, submitted)) == [job.jobid for job in slurm_run.jobs]


@pytest.mark.slurm
def test_the_local_rules_ran_on_the_submitting_node(slurm_run):
    ran_locally = set(re.findall(r"^localrule (\w+):", slurm_run.output, re.M)) - {"all"}
    assert {"summary", "plot_r_ell"} <= ran_locally <= local_rules()
    assert not {job.rule for job in slurm_run.jobs} & local_rules()


# The rules that ask for a GPU with unet.device / template.device cuda: both trainings,
# predict and the template's batched inference.
GPU_RULES = ("train_unet", "train_unet_crossfit", "predict", "template")


@pytest.mark.slurm
def test_a_config_on_the_cpu_on_purpose_trains_without_asking_for_a_gpu(slurm_run):
    # tests/configs/tiny.yaml sets unet.device and template.device to cpu.
    assert [j.state for j in slurm_run.of_rule("train_unet_crossfit")] == ["COMPLETED"]
    assert all(j.partition == "cpu" and "gpu" not in j.tres_per_job for j in slurm_run.jobs)
    log = (slurm_run.workdir / TRAIN_LOG).read_text()
    assert re.search(r"epochs, on cpu x 1", log), log[:2000]


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
    train = [j for j in slurm_run.of_rule("train_unet") if j.wildcards == f"{EXPERIMENT}_{SEED}"]
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
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert not (slurm_run.workdir / RESUME_STATE).exists()


def _left_out(rel: str) -> bool:
    """An output of what the Slurm run leaves out: the second experiment or polarisation."""
    return LEFT_OUT in rel or any(PurePath(rel).match(p) for p in POLARISATION_OUTPUTS)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slurm
def test_outputs_are_byte_identical_to_a_local_run(slurm_run, tiny_run):
    def files(root: Path) -> set[str]:
        return {
            str(path.relative_to(root))
            for top in COMPARED_DIRS
            for path in (root / top).rglob("*")
            if path.is_file()
        }

    local, slurm = files(tiny_run.workdir), files(slurm_run.workdir)
    assert slurm <= local and all(_left_out(rel) for rel in local - slurm)
    compared = sorted(
        rel
        for rel in slurm
        if not any(PurePath(rel).match(p) for p in NOT_BYTE_EQUAL + EXPERIMENT_LISTS)
    )
    differ = [
        rel
        for rel in compared
        if _sha256(slurm_run.workdir / rel) != _sha256(tiny_run.workdir / rel)
    ]
    assert not differ
    assert any(rel.endswith("unet.pt") for rel in compared)
    print(f"\n{len(compared)} of {len(slurm)} outputs compared, all byte-identical")


@pytest.mark.slurm
def test_resumed_training_history_equals_the_uninterrupted_local_one(slurm_run, tiny_run):
    rel = f"results/models/{EXPERIMENT}/seed{SEED}/training.csv"
    slurm = pd.read_csv(slurm_run.workdir / rel).drop(columns=TIMING_COLUMNS)
    local = pd.read_csv(tiny_run.workdir / rel).drop(columns=TIMING_COLUMNS)
    pd.testing.assert_frame_equal(slurm, local, check_exact=True)


# ----------------------------------------------------------------------------------------
# The README's GPU recipes, submitted for real: the training job with unet.device cuda, once
# as --gpus (with a QoS for every job) and once as a GRES string (with a per-rule QoS and a
# named partition). The test cluster's GPUs are /dev/null, so each job must stop with the
# documented error instead of training on the CPU.


@dataclass
class Submission:
    sbatch_calls: list[str]  # every sbatch command line of the run
    job: SlurmJob  # the training job
    show: str  # its `scontrol show job`
    log: str  # what the job wrote to its rule log


def _recording_sbatch(bin_dir: Path, record: Path) -> None:
    """An `sbatch` first on PATH that appends its arguments to `record`, then runs Slurm's."""
    bin_dir.mkdir()
    wrapper = bin_dir / "sbatch"
    real = shutil.which("sbatch")
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {record}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)


def _start_training(slurm_run, tmp_path: Path, overlay: dict, profile: dict):
    """Start rerunning the tiny DAG's training job with `overlay` (config) and `profile` (a
    third profile) in a copy of the Slurm run's directory; returns (process, workdir, record)."""
    workdir = tmp_path / "run"
    shutil.copytree(slurm_run.workdir, workdir, symlinks=True)
    (workdir / TRAIN_LOG).unlink()  # so that the log holds this run alone
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    record = tmp_path / "sbatch_calls.txt"
    _recording_sbatch(tmp_path / "bin", record)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *PROFILES]
    cmd += ["--profile", str(tmp_path / "profile"), "--retries", "0"]
    cmd += ["--configfile", *map(str, CONFIGS), str(tmp_path / "overlay.yaml")]
    cmd += ["--forcerun", "train_unet", "--", f"results/models/{EXPERIMENT}/seed{SEED}/unet.pt"]
    with open(tmp_path / "snakemake.out", "w") as out:  # a file: a pipe could fill and stall
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    return process, workdir, record


def _finish_training(process, workdir: Path, record: Path) -> Submission:
    """Wait for a run of :func:`_start_training`, which is expected to fail; what Slurm saw."""
    process.wait(timeout=300)
    output = (workdir.parent / "snakemake.out").read_text()
    assert process.returncode != 0, output[-4000:]
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    assert submitted, output[-4000:]
    job = next(j for j in _slurm_jobs() if j.jobid == int(submitted[-1]))
    show = subprocess.run(
        ["scontrol", "show", "job", "-o", str(job.jobid)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    calls = record.read_text().splitlines() if record.exists() else []
    return Submission(calls, job, show, (workdir / TRAIN_LOG).read_text())


def _stopped_for_want_of_cuda(submission: Submission) -> None:
    log = submission.log
    assert submission.job.rule == "train_unet" and submission.job.state == "FAILED"
    assert "the job asked for 1 GPU(s), but PyTorch sees no CUDA device on node" in log, log
    assert "a CPU-only build" in log and "set config unet.device: cpu" in log
    assert "epoch" not in log  # stopped before training: not one epoch on the CPU


@pytest.fixture(scope="module")
def submissions(slurm_run, tmp_path_factory) -> dict[str, Submission]:
    """The two recipes, submitted at once: `gpus` (--gpus, a QoS for every job) and `gres`
    (a GRES string, a per-rule QoS, and the partition `cpu` by name, which partitions.yaml
    gives no GPUs: only the explicit slurm_partition can put a GPU job there)."""
    started = {
        "gpus": _start_training(
            slurm_run,
            tmp_path_factory.mktemp("gpus"),
            {"unet": {"device": "cuda"}},
            {"slurm-qos": "normal"},
        ),
        "gres": _start_training(
            slurm_run,
            tmp_path_factory.mktemp("gres"),
            {"unet": {"device": "cuda"}, "cluster": {"gpu_request": "gres"}},
            {"set-resources": {"train_unet": {"qos": "long", "slurm_partition": "cpu"}}},
        ),
    }
    return {name: _finish_training(*run) for name, run in started.items()}


@pytest.mark.slurm
def test_the_gpu_recipe_submits_gpus_and_the_qos_and_the_job_stops_without_cuda(submissions):
    gpus_submission = submissions["gpus"]
    (call,) = [c for c in gpus_submission.sbatch_calls if "rule_train_unet" in c]
    assert "--gpus=1" in call and "--gres" not in call and "--qos=normal" in call
    assert gpus_submission.job.partition == "gpu"
    assert gpus_submission.job.tres_per_job == "gres:gpu:1"
    _stopped_for_want_of_cuda(gpus_submission)


@pytest.mark.slurm
def test_the_gres_recipe_submits_a_gres_string_a_qos_and_the_named_partition(submissions):
    gres_submission = submissions["gres"]
    (call,) = [c for c in gres_submission.sbatch_calls if "rule_train_unet" in c]
    assert "--gres=gpu:1" in call and "--gpus" not in call
    assert "--qos=long" in call and "-p cpu" in call
    assert gres_submission.job.partition == "cpu"
    assert "TresPerNode=gres:gpu:1" in gres_submission.show
    _stopped_for_want_of_cuda(gres_submission)


@pytest.mark.slurm
def test_generate_slurm_partition_config_reads_the_clusters_partitions(cluster, tmp_path):
    out = tmp_path / "partitions.yaml"
    tool = Path(SNAKEMAKE).with_name("generate-slurm-partition-config")
    done = subprocess.run([str(tool), "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert set(yaml.safe_load(out.read_text())["partitions"]) == {"cpu", "gpu"}
