"""Speed benchmarks: the HM-LSTM's training path against nn.LSTM, and the sampler.

    python -m handwriting_hm.bench [--quick] [--device cpu|cuda|all] [--repeats N] [--threads N]
    handwriting-hm bench ...

The flags are bench_command's (it loads no torch, so that --help answers at once); `run` runs them.

Prints markdown tables, one per device: forward + backward characters (or points) per second
of the reference loop, the fused path, the sparse path (CPU), the Triton kernels (CUDA, where
triton is installed) and torch.nn.LSTM (cuDNN on a GPU) at the same sizes, each with its ratio to
nn.LSTM measured in the same run; then whole training steps (forward, mixture loss, backward,
Adam) of the handwriting model with either core, in one CUDA graph on a GPU; then the
sampler (generate_reference against the COPY-skipping generate, 700 points, 3 x 400, 20
mixtures, batch 1 and 8), on random weights and with boundaries as sparse as the paper's; and the
synthesis model's three loops of steps (plain, torch.compile'd, sparse). Timings are the best of --repeats runs after one warm-up. This is a benchmark, not a test:
the tests check correctness only.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from .hmlstm.core import FLUSH, HMLSTM, resolve_impl
from .hmlstm.graphed_step import GraphedStep, optimizer_step
from .unconditional.model import HandwritingConfig, HandwritingModel, shift_inputs
from .unconditional.generate import generate, generate_reference


@dataclass(frozen=True)
class TrainShape:
    name: str  # what the steps are: "characters" (the PTB model) or "points" (handwriting)
    batch: int
    steps: int
    input_size: int
    hidden: int
    layers: int = 3

    def __str__(self) -> str:
        return f"B={self.batch} T={self.steps} {self.layers}x{self.hidden}"


# the target shapes: the PTB language model (128-d character embedding in) and handwriting
FULL_SHAPES = (TrainShape("characters", 64, 100, 128, 512), TrainShape("points", 32, 650, 3, 400))
QUICK_SHAPES = (TrainShape("characters", 16, 50, 128, 128), TrainShape("points", 8, 100, 3, 128))
SPARSE_SHAPE = TrainShape("points", 32, 100, 3, 400)  # the CPU target's shape (T=650 takes minutes per row there)
SAMPLE_POINTS = 700
# the paper's Figure 4: layers 1 / 2 / 3 updated 270 / 56 / 9 times in 270 steps, so layer 2's
# detector fired about 9 times and layer 1's about 56 - 9 = 47 times (each firing makes the
# layer above compute once, and the layer itself flush once)
PAPER_FIRING = (47 / 270, 9 / 270)


def best_time(function: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls, after one warm-up call."""
    return best_times(function, device, repeats)[0]


def best_times(function: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of the fastest of `repeats` calls, after a warm-up.

    On a shared machine the wall clock includes waiting for a core; for single-threaded work
    the CPU time is what the call would take on a core of its own.
    """
    function()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - start, time.process_time() - start_cpu))
    return best


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def training_rows(shape: TrainShape, device: torch.device, precision: str, repeats: int,
                  with_reference: bool) -> list[list[str]]:
    """One row per implementation: forward + backward steps per second and the ratio to nn.LSTM."""
    torch.manual_seed(0)
    x = torch.randn(shape.batch, shape.steps, shape.input_size, device=device)
    sizes = (shape.hidden,) * shape.layers
    lstm = nn.LSTM(shape.input_size, shape.hidden, num_layers=shape.layers, batch_first=True).to(device)
    hm = HMLSTM(shape.input_size, sizes).to(device)

    def lstm_step() -> None:
        with precision_context(precision, device):
            loss = lstm(x)[0].float().sum()
        loss.backward()

    def hm_step(impl: str) -> Callable[[], None]:
        def step() -> None:
            with precision_context(precision, device):
                loss = sum(h.float().sum() for h in hm(x, impl=impl).hidden)
            loss.backward()
        return step

    lstm_name = "nn.LSTM (cuDNN)" if device.type == "cuda" else "nn.LSTM"
    candidates = [(lstm_name, lstm_step), ("HM-LSTM fused", hm_step("fused"))]
    if device.type == "cpu":
        candidates.append(("HM-LSTM sparse", hm_step("sparse")))
    elif resolve_impl("auto", device) == "triton":
        candidates.append(("HM-LSTM triton", hm_step("triton")))
    if with_reference:
        candidates.append(("HM-LSTM reference loop", hm_step("reference")))
    rows, lstm_rate = [], None
    for name, step in candidates:
        try:
            seconds = best_time(step, device, repeats)
        except (RuntimeError, TypeError) as error:  # e.g. a precision an implementation lacks
            rows.append([name, str(shape), precision, f"failed: {str(error).splitlines()[0][:60]}", ""])
            continue
        rate = shape.batch * shape.steps / seconds
        lstm_rate = lstm_rate or rate
        rows.append([name, str(shape), precision, f"{rate:,.0f} {shape.name}/s", f"{rate / lstm_rate:.3f}x"])
    return rows


# ----------------------------------------------------------------------------- whole training step

WHOLE_STEP_SHAPES = {"cpu": SPARSE_SHAPE, "cuda": FULL_SHAPES[1]}


def whole_step_rows(device: torch.device, precision: str, repeats: int) -> list[list[str]]:
    """Points per second of whole training steps (forward, mixture loss, backward, Adam; no clipping):
    the handwriting model with an nn.LSTM core (cuDNN on a GPU; no layer norm, which cuDNN lacks)
    against the same model with the layer-normalised HM-LSTM core (impl "auto"), its detectors set
    to fire at the paper's rates. On a GPU each step is one CUDA graph (GraphedStep), where capture
    works; the row says when it ran eagerly. CPU rows with one thread are CPU seconds of this process."""
    shape = WHOLE_STEP_SHAPES[device.type]
    torch.manual_seed(0)
    offsets = torch.randn(shape.batch, shape.steps, 3, device=device)
    offsets[..., 2] = (torch.rand(shape.batch, shape.steps, device=device) < 0.05).float()
    sizes = (shape.hidden,) * shape.layers
    models = (("LSTM model (nn.LSTM core)", HandwritingConfig(cell="lstm", hidden_sizes=sizes, layer_norm=False)),
              ("HM-LSTM model", HandwritingConfig(hidden_sizes=sizes, layer_norm=True)))
    rows, lstm_seconds = [], None
    for name, config in models:
        model = HandwritingModel(config, impl="auto").to(device)
        if config.cell == "hm-lstm":
            calibrate_firing(model.core, shift_inputs(offsets), PAPER_FIRING)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, capturable=device.type == "cuda")

        def loss_fn(batch: torch.Tensor) -> torch.Tensor:
            with precision_context(precision, device):
                log_likelihood, _ = model.sequence_log_likelihood(batch)
            return -log_likelihood.sum() / batch.numel() * 3

        step = GraphedStep(optimizer_step(loss_fn, optimizer), model.parameters(), [offsets], optimizer=optimizer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the row says whether the graph was used
            wall, cpu = best_times(lambda: step(offsets), device, repeats)
        seconds = cpu if device.type == "cpu" and torch.get_num_threads() == 1 else wall
        lstm_seconds = lstm_seconds or seconds
        how = "CUDA graph" if step.graph is not None else "eager"
        impl = "" if config.cell == "lstm" else f", {resolve_impl('auto', device)}"
        rows.append([f"{name}{impl}, {how}", str(shape), precision,
                     f"{shape.batch * shape.steps / seconds:,.0f} points/s", f"{lstm_seconds / seconds:.2f}x"])
    return rows


# ----------------------------------------------------------------------------- sampler

def sparse_boundaries(model: HandwritingModel, firing: tuple[float, ...] = PAPER_FIRING,
                      points: int = 270, iterations: int = 10) -> None:
    """Set each detector's bias so that it fires at about the given fraction of steps, like a
    trained model's (random weights fire at about half the steps, so upper layers rarely COPY).

    A detector that fires makes its own layer FLUSH at the next step, so its firing rate is
    that layer's FLUSH count; the detectors are calibrated bottom up, those above silenced.
    """
    core = model.core

    def flush_rate(l: int) -> float:
        counts = generate(model, points, generator=torch.Generator().manual_seed(0)).counts[0]
        return counts[l, FLUSH].item() / points

    bisect_detector_biases([layer.bias for layer in core.recurrent], core.hidden_sizes, firing, flush_rate,
                           bound=10.0, iterations=iterations)


def bisect_detector_biases(biases: list[torch.Tensor], hidden_sizes: tuple[int, ...], firing: tuple[float, ...],
                           rate: Callable[[int], float], bound: float, iterations: int) -> None:
    """Set each detector's bias (row 4H of biases[l]) in [-bound, bound] by bisection so that rate(l) is
    about firing[l]; bottom up, with the detectors above silenced (bias -10 * bound) until their turn."""
    rows = [4 * size for size in hidden_sizes[:-1]]
    with torch.no_grad():
        for l, row in enumerate(rows):
            biases[l][row] = -10 * bound
        for l, (row, target) in enumerate(zip(rows, firing)):
            low, high = -bound, bound
            for _ in range(iterations):  # a higher bias fires more often
                biases[l][row] = (low + high) / 2
                if rate(l) > target:
                    high = (low + high) / 2
                else:
                    low = (low + high) / 2


def sampler_rows(repeats: int) -> list[list[str]]:
    """Reference and fast sampler, batch 1 and 8, on random weights and with sparse boundaries."""
    torch.manual_seed(0)
    model = HandwritingModel(HandwritingConfig(hidden_sizes=(400, 400, 400), n_mixtures=20)).eval()
    rows = []
    for weights in ("random weights", "sparse boundaries"):
        if weights == "sparse boundaries":
            sparse_boundaries(model)
        for n_samples in (1, 8):
            def run(sampler: Callable[..., object]) -> Callable[[], object]:
                return lambda: sampler(model, SAMPLE_POINTS, n_samples, generator=torch.Generator().manual_seed(0))
            reference = best_time(run(generate_reference), torch.device("cpu"), max(1, repeats // 2))
            fast, fast_cpu = best_times(run(generate), torch.device("cpu"), repeats)
            counts = generate(model, SAMPLE_POINTS, n_samples, generator=torch.Generator().manual_seed(0)).counts
            active = (SAMPLE_POINTS - counts[:, :, 0].float().mean(dim=0)).round().int().tolist()
            rows.append([weights, str(n_samples), " / ".join(map(str, active)),
                         f"{reference:.2f} s", f"{fast:.2f} s", f"{fast_cpu:.2f} s", f"{reference / fast:.1f}x",
                         f"{n_samples * SAMPLE_POINTS / fast:,.0f}"])
    return rows


# ----------------------------------------------------------------------------- the sparse CPU path

DENSE_FIRING = (0.5, 0.5)  # an untrained model's detectors fire at about half the steps


def calibrate_firing(core: HMLSTM, x: torch.Tensor, firing: tuple[float, ...], iterations: int = 14) -> list[float]:
    """Set each detector's layer-norm bias (the boundary unit's) by bisection so that z^l fires at about
    the given fraction of the steps of x, bottom up with the detectors above silenced; return the rates."""
    def boundary_rate(l: int) -> float:
        return core(x, impl="auto").boundaries[..., l].mean().item()

    bisect_detector_biases([norm.bias for norm in core.norms], core.hidden_sizes, firing, boundary_rate,
                           bound=5.0, iterations=iterations)
    with torch.no_grad():
        return core(x, impl="auto").boundaries.mean(dim=(0, 1)).tolist()


def sparse_rows(repeats: int) -> list[list[str]]:
    """The CPU targets' table: 3x400 layer-normalised HM-LSTM, B=32, T=100, forward + backward of the
    core, the sparse path with either copy gradient and the fused path, at the paper's and at dense
    firing rates, against nn.LSTM(3, 400, 3) on the same input, in one run (with one thread CPU
    seconds of this process, so that other jobs on the machine count less; with more, wall-clock
    seconds, as CPU time would add the threads up)."""
    shape, device = SPARSE_SHAPE, torch.device("cpu")
    torch.manual_seed(0)
    x = torch.randn(shape.batch, shape.steps, shape.input_size)
    lstm = nn.LSTM(shape.input_size, shape.hidden, num_layers=shape.layers, batch_first=True)
    core = HMLSTM(shape.input_size, (shape.hidden,) * shape.layers, layer_norm=True)

    def lstm_step() -> None:
        lstm(x)[0].sum().backward()

    def hm_step(impl: str, copy_gradient: str) -> Callable[[], None]:
        def step() -> None:  # "exact" is the paper's reading: z recomputed on COPY (core.py)
            core.copy_gradient = copy_gradient
            core.z_on_copy = "recompute" if copy_gradient == "exact" else "keep"
            sum(h.sum() for h in core(x, impl=impl).hidden).backward()
        return step

    clock = 1 if torch.get_num_threads() == 1 else 0  # best_times gives (wall, CPU)
    # nn.LSTM is timed before and after the HM-LSTM rows and its best kept: on a shared machine one
    # best-of-3 of it once came out 1.4x slower than a minute later, which made every ratio look better
    lstm_seconds = best_times(lstm_step, device, repeats)[clock]
    measured = []
    for name, firing in (("paper's", PAPER_FIRING), ("dense", DENSE_FIRING)):
        rates = calibrate_firing(core, x, firing)
        for impl, copy_gradient in (("sparse", "straight"), ("sparse", "mixed"), ("sparse", "exact"),
                                    ("fused", "straight")):
            seconds = best_times(hm_step(impl, copy_gradient), device, repeats)[clock]
            label = f"HM-LSTM {impl}" + (f", {copy_gradient} gradient" if impl == "sparse" else "")
            measured.append((label, f"{name}: " + " / ".join(f"{rate:.2f}" for rate in rates), seconds))
    lstm_seconds = min(lstm_seconds, best_times(lstm_step, device, repeats)[clock])
    rows = [["nn.LSTM", "–", str(shape), f"{shape.batch * shape.steps / lstm_seconds:,.0f} points/s", "1.00x"]]
    for label, rates, seconds in measured:
        rows.append([label, rates, str(shape), f"{shape.batch * shape.steps / seconds:,.0f} points/s",
                     f"{lstm_seconds / seconds:.2f}x"])
    return rows


# ----------------------------------------------------------------------------- the synthesis model's steps

SYNTHESIS_SHAPE = TrainShape("points", 32, 200, 3, 256)  # the first IAM-OnDB synthesis run's size and chunk
SYNTHESIS_ALPHABET = "".join(chr(code) for code in range(32, 112))  # 80 characters, about IAM-OnDB's count
SYNTHESIS_TEXT = 40  # characters per line
SILENT_FIRING = (0.0, 0.0)  # the first IAM-OnDB synthesis run's detectors: z^1 at 0.3 % of the points, z^2 never


def synthesis_rows(repeats: int) -> list[list[str]]:
    """Forward + backward of the synthesis model (3x256, B=32, T=200, 40 characters) with each of its
    loops: the plain step, the torch.compile'd step and the sparse step, with the detectors' biases set so
    that they fire at the paper's rates, at an untrained model's, and never (as in the first IAM run)."""
    from .mixture import mixture_log_likelihood
    from .synthesis.model import SynthesisConfig, SynthesisModel

    shape, device = SYNTHESIS_SHAPE, torch.device("cpu")
    torch.manual_seed(0)
    model = SynthesisModel(SynthesisConfig(alphabet=SYNTHESIS_ALPHABET, hidden_sizes=(shape.hidden,) * shape.layers,
                                           embedding_size=shape.hidden))
    points = torch.randn(shape.batch, shape.steps, 3)
    points[..., 2] = (torch.rand(shape.batch, shape.steps) < 0.05).float()
    text = nn.functional.one_hot(torch.randint(len(SYNTHESIS_ALPHABET), (shape.batch, SYNTHESIS_TEXT)),
                                 len(SYNTHESIS_ALPHABET)).float()

    def forward(impl: str):
        model.impl = impl
        return model(shift_inputs(points), text)

    def train_step(impl: str) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad()
            (-mixture_log_likelihood(forward(impl).params, points).mean()).backward()
        return step

    def boundary_rate(l: int) -> float:
        with torch.no_grad():
            return forward("sparse").boundaries[..., l].mean().item()

    rows = []
    for name, firing in (("paper's", PAPER_FIRING), ("dense", DENSE_FIRING), ("silent", SILENT_FIRING)):
        bisect_detector_biases([norm.bias for norm in model.core.norms], model.core.hidden_sizes, firing,
                               boundary_rate, bound=5.0, iterations=12)
        with torch.no_grad():
            rates = forward("sparse").boundaries.mean(dim=(0, 1)).tolist()
        seconds = {impl: best_times(train_step(impl), device, repeats)[0] for impl in ("reference", "compiled", "sparse")}
        for impl, taken in seconds.items():
            rows.append([impl, f"{name}: " + " / ".join(f"{rate:.3f}" for rate in rates), str(shape),
                         f"{shape.batch * shape.steps / taken:,.0f} points/s", f"{seconds['compiled'] / taken:.2f}x"])
    return rows


# ----------------------------------------------------------------------------- report

def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls (CUDA only), for both sides alike, as the GPU targets specify."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        elif args.device == "cuda":
            raise ValueError("--device cuda: no CUDA device is available")
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    print(f"handwriting_hm.bench, {datetime.date.today().isoformat()}, torch {torch.__version__}, "
          f"{'quick' if args.quick else 'full'} shapes, best of {args.repeats}\n")
    header = ["implementation", "shape", "precision", "fwd+bwd", "vs nn.LSTM"]
    for device in [] if args.no_training else devices:
        rows = []
        with tf32(device.type == "cuda"):
            precisions = ("fp32 (TF32)", "bf16") if device.type == "cuda" else ("fp32",)
            for shape in shapes:
                for precision in precisions:
                    rows += training_rows(shape, device, "bf16" if precision == "bf16" else precision,
                                          args.repeats, not args.no_reference)
        print(f"Training, {describe(device)}\n\n{markdown(header, rows)}\n", flush=True)
        if not args.no_whole_step:
            with tf32(device.type == "cuda"):
                step_rows = [row for precision in precisions
                             for row in whole_step_rows(device, "bf16" if precision == "bf16" else precision, args.repeats)]
            print(f"Whole training step (forward, loss, backward, Adam), {describe(device)}\n\n"
                  f"{markdown(header, step_rows)}\n", flush=True)
    if not args.no_sparse:
        header = ["implementation", "z^1 / z^2 firing rates", "shape", "fwd+bwd", "vs nn.LSTM"]
        clock = "CPU seconds of this process" if torch.get_num_threads() == 1 else "wall-clock seconds"
        print(f"Sparse training path, {describe(torch.device('cpu'))}, layer norm, {clock}\n\n"
              f"{markdown(header, sparse_rows(args.repeats))}\n", flush=True)
    if not args.no_synthesis:
        header = ["step", "z^1 / z^2 firing rates", "shape", "fwd+bwd", "vs compiled"]
        print(f"Synthesis model's loop, {describe(torch.device('cpu'))}, 3x256, 40 characters, wall-clock seconds\n\n"
              f"{markdown(header, synthesis_rows(args.repeats))}\n", flush=True)
    if not args.no_sampler:
        header = ["model", "batch", "active steps per layer", "reference", "fast", "fast (CPU time)",
                  "speed-up", "points/s (fast)"]
        print(f"Sampler, {describe(torch.device('cpu'))} (the samplers use 1 thread), "
              f"{SAMPLE_POINTS} points, 3x400, 20 mixtures\n\n{markdown(header, sampler_rows(args.repeats))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m handwriting_hm.bench ARGS`: the same as `handwriting-hm bench ARGS`."""
    from .cli import main as handwriting_hm

    return handwriting_hm(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
