"""The container definition (Dockerfile) and the GPU environment: what can be checked without
docker, apptainer or the internet. Building the image is not tested here."""

import os
import re
import subprocess
import sys

import yaml
from conftest import REPO, SNAKEMAKE, TINY_CONFIG

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_base_image_is_pinned_to_the_python_of_the_pinned_environment():
    (base,) = [args for word, args in instructions() if word == "FROM"]
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm", base)
    assert match, f"FROM {base}: expected python:<major>.<minor>.<patch>-slim-bookworm"
    assert tuple(map(int, match.groups()[:2])) == sys.version_info[:2]


def test_every_pip_install_uses_the_lock_file_and_installs_no_test_tools():
    runs = [args for word, args in instructions() if word == "RUN"]
    installs = [cmd for run in runs for cmd in run.split("&&") if "pip install" in cmd]
    assert installs
    for cmd in installs:
        assert "--constraint constraints.txt" in cmd, cmd
        assert '".[workflow]"' in cmd and "test" not in cmd, cmd


def test_everything_the_dockerfile_copies_exists_and_is_not_ignored():
    ignored = set((REPO / ".dockerignore").read_text().split())
    for word, args in instructions():
        if word == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.split("/")[0] not in ignored, source


def test_the_gpu_environment_differs_from_the_cpu_one_only_in_its_pytorch_build():
    cpu = yaml.safe_load((REPO / "envs" / "dustpred.yaml").read_text())
    gpu = yaml.safe_load((REPO / "envs" / "dustpred-gpu.yaml").read_text())
    assert gpu["channels"] == cpu["channels"]
    swap = {"pytorch=2.13": "pytorch-gpu=2.13"}
    assert gpu["dependencies"] == [
        swap.get(d, d) if isinstance(d, str) else d for d in cpu["dependencies"]
    ]


def test_the_gpu_rules_use_the_gpu_environment_and_the_others_do_not():
    gpu_rules = {"train_unet", "predict", "template", "train_unet_qu", "predict_qu"}
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=\S)", path.read_text()):
            rule = re.match(r"rule (\w+):", block)
            if rule:
                env = re.search(r"conda:\s+(\w+)", block).group(1)
                assert env == ("GPU_ENV" if rule[1] in gpu_rules else "CONDA_ENV"), rule[1]


# A stand-in for apptainer: answers --version and records each `apptainer exec` it is given
# (the job itself then fails: its paths exist only inside a real container).
FAKE_APPTAINER = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "apptainer version 1.3.6"; exit 0; fi
printf '%s\\n' "$*" >> "{record}"
exit 1
"""


def test_with_sdm_apptainer_a_job_starts_in_the_configured_image(tmp_path):
    record, fake = tmp_path / "apptainer_calls.txt", tmp_path / "bin" / "apptainer"
    fake.parent.mkdir()
    fake.write_text(FAKE_APPTAINER.format(record=record))
    fake.chmod(0o755)
    image = tmp_path / "dustpred-0.1.0.sif"
    image.touch()
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "1"]
    cmd += ["--configfile", str(REPO / "config" / "config.yaml"), str(TINY_CONFIG)]
    cmd += ["--sdm", "apptainer", "--config", f"container={image}", "--until", "simulate_sky"]
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0  # the stand-in runs nothing
    (call,) = record.read_text().splitlines()
    assert call.startswith("exec ") and f" {image} " in call, call[:500]
