"""Measure the app the way a user meets it: start-up time, and request-to-picture latency.

    python -m app.timing                      # the shipped default model
    python -m app.timing --checkpoint RUN.pt  # any handwriting checkpoint
    python -m app.timing --random-init        # a paper-size (3 x 400) model with random weights

Start-up is the time from launching `handwriting-hm app` in a fresh process until its page
answers over HTTP (imports, model loading and server start included). Latency is the time a
gradio_client request for one 700-point sample takes to come back with the drawing (the SVG
in the reply), and, measured apart, with its three download files fetched too. Targets: start-up under 10 s; one 700-point sample within 1 s on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gradio_client import Client

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_random_checkpoint(path: Path) -> Path:
    """The paper's architecture with untrained weights: the sampler's cost, not its quality."""
    import torch

    from handwriting_hm.hmlstm.checkpoint import checkpoint_payload, save_checkpoint
    from handwriting_hm.unconditional.model import KIND, HandwritingConfig, HandwritingModel

    torch.manual_seed(0)
    config = HandwritingConfig()
    save_checkpoint(path, checkpoint_payload(KIND, config.to_dict(), HandwritingModel(config).state_dict(), slope=1.0,
                                             metadata={"stats": {"mean": [0.0, 0.0], "std": [1.0, 1.0]}}))
    return path


def wait_until_served(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with code {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the app did not serve {url} within {START_TIMEOUT_S} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    which.add_argument("--random-init", action="store_true", help="a random-weight 3 x 400 model")
    parser.add_argument("--n-points", type=int, default=700)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = write_random_checkpoint(Path(scratch) / "random.pt") if args.random_init else args.checkpoint
        port = free_port()
        command = [sys.executable, "-m", "handwriting_hm.cli", "app", "--port", str(port)]
        command += ["--checkpoint", str(checkpoint)] if checkpoint else []
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_until_served(f"http://127.0.0.1:{port}/", process)
            start_up = time.perf_counter() - started
            # with the three download files fetched, and without (the picture itself is the SVG in the reply)
            with_files = time_requests(Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=scratch), args)
            picture_only = time_requests(Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False), args)
        finally:
            process.terminate()
            process.wait(timeout=30)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model: {'random 3x400' if args.random_init else checkpoint or 'shipped default'}; "
          f"{os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"start-up (process start -> page served): {start_up:.2f} s")
    for what, latencies in (("with SVG/PNG/JSON downloads", with_files), ("picture only", picture_only)):
        print(f"{args.n_points}-point request, {what}: first {latencies[0]:.2f} s, then median "
              f"{statistics.median(latencies[1:]):.2f} s, max {max(latencies[1:]):.2f} s over {args.repeats}")


def time_requests(client: Client, args: argparse.Namespace) -> list[float]:
    """Seconds per request; the first one (warm-up) comes first."""
    latencies = []
    for seed in range(args.repeats + 1):
        begun = time.perf_counter()
        client.predict(args.n_points, 1, 0.0, 1.0, seed, "layer1", 1, False, api_name="/generate")
        latencies.append(time.perf_counter() - begun)
    return latencies


if __name__ == "__main__":
    main()
