"""Model benchmark: bert_book's BertForMaskedLM against transformers' (attn_implementation='sdpa') on the same config,
batch and machine.

Two workloads, each for a compact and a base config:
- train: one optimizer step = forward + backward + AdamW step, MLM labels on 15% of the tokens. bert_book runs it twice:
  with the full (B, T, V) logits, as transformers does ("same work"), and with `masked_only=True`, which scores only the
  labelled positions ("doing less"; the loss is the same number).
- infer: a forward pass without gradients (torch.inference_mode) returning the full (B, T, V) logits, for both.

Throughput is tokens per second (B * T / step time). The implementations are timed alternately in one process (after a
warm-up, repetitions interleave, the order rotating each round) and the median is reported, so drifts in machine speed
hit all of them alike. Peak memory is measured separately, in a fresh subprocess per implementation and workload so
that nothing else is resident, over two steps after the model is built: on CUDA `torch.cuda.max_memory_allocated()`;
on the CPU the process's peak resident set size during the steps (Linux's VmHWM in /proc/self/status, reset after
building the model) minus its resident set size after the imports — weights, gradients, AdamW state, activations and
the allocator's caching, i.e. what the process really needed from the machine to run the workload.

    python bench/bench_model.py                 # both configs, cuda if available
    python bench/bench_model.py --quick         # fewer repetitions, smaller base batch (a smoke run)
    python bench/bench_model.py --device cpu --threads 2 --configs compact
    python bench/bench_model.py --device cuda --dtype bf16 --configs base --batch 256 --measure-peak   # MFU on a GPU

`--dtype bf16` runs every step under `torch.autocast(device, torch.bfloat16)` (weights, gradients and AdamW state stay
fp32: mixed precision as a user would train). Where the device's dense bf16 peak is known (a GPU named in
`PEAK_BF16_TFLOPS`, or `--peak-tflops`), a second table gives the achieved model FLOP/s and the MFU, model FLOPs
utilisation = achieved FLOP/s / peak FLOP/s. The model FLOPs of one step count the matrix products only (embedding
lookups, LayerNorm, softmax, GELU and bias adds are < 2% and not counted); per sequence of T tokens, with L layers,
hidden size H, feed-forward size I, vocabulary V and S scored tokens:

    forward = 2·T·L·(4·H² + 2·H·I)     the encoder's weights: Q, K, V, output; two feed-forward matrices
            + 4·L·T²·H                 attention: Q·Kᵀ and the weighted sum of V (2·T²·H each per layer)
            + 2·S·(H² + H·V)           the MLM head: transform and decoder, at the S scored positions
    train   = 3 × forward               (backward = twice the forward)

i.e. about 6 × params × tokens + 12·L·T²·H per sequence for training, the usual MFU formula. S = T for the full
logits (transformers, bert_book, infer) and S = the labelled positions for `masked_only`, so its MFU counts only the
work it does (its speed-up shows in tokens/s, not in a higher MFU). `--measure-peak` also times an 8192³ bf16 matrix
product on the device and gives the MFU against that measured ceiling as well.
"""
from __future__ import annotations
import argparse, json, os, platform, resource, statistics, subprocess, sys, time, warnings

import torch

warnings.filterwarnings('ignore')
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')

CONFIGS = {  # name: model shape, batch (full run), batch (--quick)
    'compact': (dict(vocab_size=16000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024), 8, 4),
    'base': (dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072), 2, 1),
}
SEQ_LEN, MASK_RATE = 128, 0.15
# dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendor's datasheets (half the "with sparsity" figure):
# SXM H100 and H200 1979/2 (H200.md: "dense bf16 about 990"), H100 PCIe 1513/2, H100/H200 NVL 1671/2, A100 312,
# L40S 733/2, L4 242/2, B200 4500/2. The longest name contained in torch.cuda.get_device_name() wins.
PEAK_BF16_TFLOPS = {'H200': 989.4, 'GH200': 989.4, 'H100': 989.4, 'H100 PCIe': 756.5, 'H100 NVL': 835.5,
                    'H200 NVL': 835.5, 'A100': 312.0, 'L40S': 366.5, 'L4': 121.0, 'B200': 2250.0}
DTYPES = {'fp32': None, 'bf16': torch.bfloat16}
IMPLS = {'train': ('transformers', 'bert_book', 'bert_book masked_only'), 'infer': ('transformers', 'bert_book')}


def build(impl: str, shape: dict, device: torch.device):
    "The MLM model of one implementation, on `device`."
    if impl == 'transformers':
        import transformers
        cfg = transformers.BertConfig(**shape, attn_implementation='sdpa')
        return transformers.BertForMaskedLM(cfg).to(device)
    from bert_book.core import BertConfig
    from bert_book.heads import BertForMaskedLM
    return BertForMaskedLM(BertConfig(**shape)).to(device)


def make_batch(shape: dict, batch_size: int, device: torch.device, seed: int = 0) -> dict:
    "Random ids of full length, all real tokens, two segments, and MLM labels at 15% of the positions."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, shape['vocab_size'], (batch_size, SEQ_LEN), generator=g)
    types = (torch.arange(SEQ_LEN) >= SEQ_LEN // 2).long().expand(batch_size, -1).contiguous()
    scored = torch.rand(batch_size, SEQ_LEN, generator=g) < MASK_RATE
    labels = torch.where(scored, ids, torch.full_like(ids, -100))
    b = dict(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=types, labels=labels)
    return {k: v.to(device) for k, v in b.items()}


def peak_tflops(device_name: str) -> float | None:
    "The dense bf16 peak of a GPU from `PEAK_BF16_TFLOPS` (longest matching name), or None when unknown."
    hits = [k for k in PEAK_BF16_TFLOPS if k.lower() in device_name.lower()]
    return PEAK_BF16_TFLOPS[max(hits, key=len)] if hits else None


def model_flops(shape: dict, batch_size: int, mode: str, scored: int | None = None) -> float:
    "Matrix-product FLOPs of one step (the module docstring's formula); `scored` = positions the MLM head scores."
    T, L, H, I, V = SEQ_LEN, shape['num_hidden_layers'], shape['hidden_size'], shape['intermediate_size'], shape['vocab_size']
    scored = batch_size * T if scored is None else scored
    forward = batch_size * (2 * T * L * (4 * H * H + 2 * H * I) + 4 * L * T * T * H) + 2 * scored * (H * H + H * V)
    return 3 * forward if mode == 'train' else forward


def measure_matmul_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    "TFLOP/s of an n×n×n bf16 matrix product on random data (mean of `reps` after 3 warm-ups), CUDA only."
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3): a @ b
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps): a @ b
    torch.cuda.synchronize(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


class Runner:
    "One implementation's model, optimizer and batch, ready to run a workload step."
    def __init__(self, impl: str, mode: str, shape: dict, batch_size: int, device: torch.device, dtype: str = 'fp32'):
        torch.manual_seed(0)
        self.impl, self.mode, self.device, self.autocast = impl, mode, device, DTYPES[dtype]
        self.model = build(impl, shape, device)
        self.batch = make_batch(shape, batch_size, device)
        self.tokens = batch_size * SEQ_LEN
        self.scored = int((self.batch['labels'] != -100).sum()) if impl.endswith('masked_only') else None
        if mode == 'train':
            self.model.train()
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, foreach=True)
        else:
            self.model.eval()
            self.batch = {k: v for k, v in self.batch.items() if k != 'labels'}

    def step(self):
        "One training step or one forward pass (under bf16 autocast when asked for)."
        if self.autocast is None: return self._step()
        with torch.autocast(self.device.type, dtype=self.autocast): return self._step()

    def _step(self):
        if self.mode == 'infer':
            with torch.inference_mode(): self.model(**self.batch).logits
            return
        extra = {'masked_only': True} if self.impl.endswith('masked_only') else {}
        self.model(**self.batch, **extra).loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def timed_step(self) -> float:
        "Seconds for one step, synchronised on CUDA."
        if self.device.type == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.step()
        if self.device.type == 'cuda': torch.cuda.synchronize()
        return time.perf_counter() - t0


def throughput(mode: str, shape: dict, batch_size: int, device: torch.device, warmup: int, reps: int,
               dtype: str = 'fp32', flops: dict | None = None) -> dict:
    "Median tokens/s of each implementation, timed alternately; `flops` (if given) gets each one's model FLOP/s."
    runners = [Runner(impl, mode, shape, batch_size, device, dtype) for impl in IMPLS[mode]]
    for r in runners:
        for _ in range(warmup): r.step()
    times = {r.impl: [] for r in runners}
    for i in range(reps):
        for r in runners[i % len(runners):] + runners[:i % len(runners)]:  # rotate who goes first
            times[r.impl].append(r.timed_step())
    if flops is not None:
        for r in runners: flops[r.impl] = model_flops(shape, batch_size, mode, r.scored) / statistics.median(times[r.impl])
    return {impl: runners[0].tokens / statistics.median(ts) for impl, ts in times.items()}


def _proc_status_mb(field: str) -> float | None:
    "A memory field of /proc/self/status (Linux) in MB, or None where there is no /proc."
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'): return int(line.split()[1]) / 2**10  # kB
    except OSError:
        return None


def _peak_rss_mb() -> float:
    "This process's peak resident set size in MB."
    hwm = _proc_status_mb('VmHWM')  # the high-water mark of this program's own memory, reset at exec
    if hwm is not None: return hwm
    # elsewhere: getrusage, which on Linux would also count the parent's peak before exec (hence VmHWM first)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == 'darwin' else peak / 2**10


def _malloc_trim():
    "Return the C heap's free memory to the OS (glibc), so that resident memory counts live objects only."
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    "Start a new peak (VmHWM) from the current resident size (Linux: write 5 to /proc/self/clear_refs)."
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        return True
    except OSError:
        return False


def _rss_mb() -> float:
    "This process's current resident set size in MB."
    rss = _proc_status_mb('VmRSS')
    return rss if rss is not None else _peak_rss_mb()


def probe_memory(impl: str, mode: str, config: str, batch_size: int, device: torch.device, steps: int = 2,
                 dtype: str = 'fp32') -> float:
    "Peak memory in MB of this process running only `impl` on `mode` (see the module docstring)."
    import bert_book.heads, transformers.models.bert.modeling_bert  # noqa: F401  transformers imports lazily: load its
    transformers.BertForMaskedLM                                        # BERT code now, so the baseline holds all code
    baseline = _rss_mb()
    r = Runner(impl, mode, CONFIGS[config][0], batch_size, device, dtype)
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    else:  # building a model passes through temporaries: hand freed memory back, then measure the steps' peak
        _malloc_trim()
        _reset_peak_rss()
    for _ in range(steps): r.step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _peak_rss_mb() - baseline


def memory_in_subprocess(impl, mode, config, batch_size, device, threads, dtype='fp32') -> float:
    "Run `probe_memory` in a fresh interpreter and read its answer."
    cmd = [sys.executable, __file__, '--probe', impl, mode, config, str(batch_size), '--device', str(device), '--threads', str(threads),
           '--dtype', dtype]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])['peak_mb']


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default=None, help="'cpu', 'cuda', ... (default: cuda when available, else cpu)")
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads for every model (default: all cores)')
    p.add_argument('--configs', default='compact,base', help='comma-separated: compact, base')
    p.add_argument('--reps', type=int, default=None, help='timed repetitions per implementation (default 10, --quick 3)')
    p.add_argument('--quick', action='store_true', help='fewer repetitions and a smaller base batch')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
    p.add_argument('--dtype', default='fp32', choices=list(DTYPES), help='fp32, or bf16 autocast (mixed precision; default fp32)')
    p.add_argument('--batch', type=int, default=None, help='batch size for every config (default: per config, smaller with --quick)')
    p.add_argument('--peak-tflops', type=float, default=None,
                   help="the device's dense peak in TFLOP/s for the MFU table (default: PEAK_BF16_TFLOPS by GPU name; none on CPU)")
    p.add_argument('--measure-peak', action='store_true', help='CUDA: also time an 8192^3 bf16 matmul and give MFU against it')
    p.add_argument('--probe', nargs=4, metavar=('IMPL', 'MODE', 'CONFIG', 'BATCH'), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    device = torch.device(a.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    threads = a.threads or os.cpu_count()
    torch.set_num_threads(threads)
    if a.probe:
        impl, mode, config, bs = a.probe
        print(json.dumps({'peak_mb': probe_memory(impl, mode, config, int(bs), device, dtype=a.dtype)}))
        return

    import transformers
    reps, warmup = a.reps or (3 if a.quick else 10), 1 if a.quick else 2
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else (platform.processor() or platform.machine())
    load = ' (load average at start %.1f: other work on the machine slows both alike)' % os.getloadavg()[0] if hasattr(os, 'getloadavg') else ''
    print(f'# bert_book vs transformers {transformers.__version__}: BertForMaskedLM, torch {torch.__version__}, '
          f'{device} ({name}), {threads} threads{load}, seq {SEQ_LEN}, {int(MASK_RATE * 100)}% MLM labels, median of {reps} alternating reps'
          + (f', {a.dtype} autocast' if a.dtype != 'fp32' else ''))
    peak = a.peak_tflops or (peak_tflops(name) if device.type == 'cuda' else None)
    measured = measure_matmul_tflops(device) if a.measure_peak and device.type == 'cuda' else None
    mfu_rows = []
    mem_what = 'max_memory_allocated' if device.type == 'cuda' else 'peak RSS over post-import RSS, own process'
    print(f'| config | workload | implementation | batch | tokens/s | × transformers | peak MB ({mem_what}) | × transformers |')
    print('|---|---|---|---|---|---|---|---|')
    for config in a.configs.split(','):
        if config not in CONFIGS: p.error(f'unknown config {config!r}; choose from {list(CONFIGS)}')
        shape, bs_full, bs_quick = CONFIGS[config]
        bs = a.batch or (bs_quick if a.quick else bs_full)
        for mode in ('train', 'infer'):
            flops = {}
            tps = throughput(mode, shape, bs, device, warmup, reps, a.dtype, flops)
            mfu_rows += [(config, mode, impl, bs, tps[impl], flops[impl]) for impl in IMPLS[mode]]
            mem = {} if a.no_memory else {impl: memory_in_subprocess(impl, mode, config, bs, device, threads, a.dtype)
                                          for impl in IMPLS[mode]}
            for impl in IMPLS[mode]:
                m = f"{mem[impl]:.0f} | {mem[impl] / mem['transformers']:.2f}" if mem else '- | -'
                print(f"| {config} | {mode} | {impl} | {bs} | {tps[impl]:,.0f} | {tps[impl] / tps['transformers']:.2f} | {m} |", flush=True)
    if peak or measured:
        print_mfu(mfu_rows, name, a.dtype, peak, 'datasheet' if not a.peak_tflops else '--peak-tflops', measured)


def print_mfu(rows, name: str, dtype: str, peak: float | None, source: str, measured: float | None):
    "The MFU table: model FLOP/s (module docstring) over the peak, and over the measured matmul rate if any."
    cols = ([f'MFU vs {peak:g} TFLOP/s ({source})'] if peak else []) + ([f'MFU vs {measured:.0f} TFLOP/s (measured 8192³ bf16 matmul)'] if measured else [])
    print(f'\n# model FLOPs utilisation on {name}, {dtype}: FLOPs = 3 × (2·T·L·(4H²+2HI) + 4·L·T²·H + 2·S·(H²+HV)) per train step, 1 × per forward')
    print('| config | workload | implementation | batch | tokens/s | achieved TFLOP/s | ' + ' | '.join(cols) + ' |')
    print('|---|---|---|---|---|---|' + '---|' * len(cols))
    for config, mode, impl, bs, tps, flops in rows:
        mfu = [f'{flops / 1e12 / p:.1%}' for p in (peak, measured) if p]
        print(f'| {config} | {mode} | {impl} | {bs} | {tps:,.0f} | {flops / 1e12:.3g} | ' + ' | '.join(mfu) + ' |', flush=True)


if __name__ == '__main__':
    main()
