"""dustpred.devices: the GPUs a job asked for, and no silent CPU run of a GPU job.

These tests run on the CPU build of PyTorch (constraints.txt), which sees no CUDA device:
exactly the situation of a GPU job whose environment solved to the CPU build.
"""

import socket

import pytest
import torch

from dustpred.devices import check_gpu_job, requested_gpus
from dustpred.errors import InputError

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.mark.parametrize(
    ("gpu", "gres", "count"),
    [
        (1, "", 1),
        (2, None, 2),
        ("2", "", 2),
        (0, "gpu", 1),
        (0, "gpu:3", 3),
        (0, "gpu:a100:2", 2),
        (0, "shard:1,gpu:h100:4", 4),
        (0, "", 0),
        (None, None, 0),
        (0, "shard:2", 0),
    ],
)
def test_requested_gpus_reads_the_gpu_resource_or_the_gres_string(gpu, gres, count):
    assert requested_gpus(gpu, gres) == count


def test_a_job_that_asked_for_a_gpu_and_sees_no_cuda_stops_with_the_fix():
    with pytest.raises(InputError) as raised:
        check_gpu_job("auto", 1, key="unet.device")
    message = str(raised.value)
    assert message.startswith("the job asked for 1 GPU(s), but PyTorch sees no CUDA device on")
    assert f"node {socket.gethostname()}" in message
    assert f"torch {torch.__version__}, a CPU-only build" in message
    assert "CUDA_VISIBLE_DEVICES=" in message
    assert "envs/dustpred-gpu.yaml" in message and "set config unet.device: cpu" in message


def test_device_cuda_without_cuda_stops_even_without_a_gpu_request():
    with pytest.raises(InputError, match=r"config template.device is 'cuda', but PyTorch"):
        check_gpu_job("cuda", 0, key="template.device")


def test_device_cpu_runs_on_the_cpu_on_purpose(caplog):
    check_gpu_job("cpu", 0, key="unet.device")
    assert not caplog.records


def test_device_cpu_with_a_gpu_given_anyway_warns_that_it_idles(caplog):
    check_gpu_job("cpu", 2, key="unet.device")
    assert "given 2 GPU(s), which stay idle" in caplog.text


def test_device_auto_without_a_gpu_request_runs_where_it_is():
    check_gpu_job("auto", 0, key="unet.device")


def test_predict_device_cuda_without_cuda_is_an_error_not_the_cpu():
    from dustpred.evaluation.predict import resolve_device

    with pytest.raises(InputError, match="device 'cuda' requested but PyTorch sees no CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
