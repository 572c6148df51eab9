"""OpenMP's default (spinning) wait against ``OMP_WAIT_POLICY=PASSIVE`` for a small CPU U-Net-like
training loop (2 torch threads), alone and beside busy processes that take every core, as jobs
that share cores do in a workflow run. Each case runs in a fresh process (the policy is read
when the OpenMP runtime starts). Prints wall and CPU seconds of each and the ratios.

    python bench/bench_omp_wait.py [--steps 60] [--busy N]   (N: default os.cpu_count())
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

LOOP = """
import time, torch
torch.manual_seed(0)
torch.set_num_threads(2)
conv = torch.nn.Conv2d
net = torch.nn.Sequential(conv(64, 8, 3, padding=1), torch.nn.ReLU(),
                          conv(8, 8, 3, padding=1), torch.nn.ReLU(), conv(8, 1, 3, padding=1))
opt = torch.optim.Adam(net.parameters())
x = torch.randn(8, 64, 64, 64)
wall, cpu = time.perf_counter(), time.process_time()
for _ in range({steps}):
    opt.zero_grad()
    net(x).pow(2).mean().backward()
    opt.step()
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


def run(steps: int, policy: str | None) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run(
        [sys.executable, "-c", LOOP.format(steps=steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--busy", type=int, default=os.cpu_count())
    args = parser.parse_args()
    for busy in (0, args.busy):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            spin = run(args.steps, None)
            passive = run(args.steps, "PASSIVE")
        finally:
            for hog in hogs:
                hog.kill()
        print(
            f"{busy:3d} busy processes: default wall {spin[0]:.2f} s cpu {spin[1]:.2f} s | "
            f"PASSIVE wall {passive[0]:.2f} s cpu {passive[1]:.2f} s | "
            f"default / PASSIVE: wall {spin[0] / passive[0]:.2f}, cpu {spin[1] / passive[1]:.2f}"
        )


if __name__ == "__main__":
    main()
