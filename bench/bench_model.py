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


class Runner:
    "One implementation's model, optimizer and batch, ready to run a workload step."
    def __init__(self, impl: str, mode: str, shape: dict, batch_size: int, device: torch.device):
        torch.manual_seed(0)
        self.impl, self.mode, self.device = impl, mode, device
        self.model = build(impl, shape, device)
        self.batch = make_batch(shape, batch_size, device)
        self.tokens = batch_size * SEQ_LEN
        if mode == 'train':
            self.model.train()
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, foreach=True)
        else:
            self.model.eval()
            self.batch = {k: v for k, v in self.batch.items() if k != 'labels'}

    def step(self):
        "One training step or one forward pass."
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


def throughput(mode: str, shape: dict, batch_size: int, device: torch.device, warmup: int, reps: int) -> dict:
    "Median tokens/s of each implementation, timed alternately."
    runners = [Runner(impl, mode, shape, batch_size, device) for impl in IMPLS[mode]]
    for r in runners:
        for _ in range(warmup): r.step()
    times = {r.impl: [] for r in runners}
    for i in range(reps):
        for r in runners[i % len(runners):] + runners[:i % len(runners)]:  # rotate who goes first
            times[r.impl].append(r.timed_step())
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


def probe_memory(impl: str, mode: str, config: str, batch_size: int, device: torch.device, steps: int = 2) -> float:
    "Peak memory in MB of this process running only `impl` on `mode` (see the module docstring)."
    import bert_book.heads, transformers.models.bert.modeling_bert  # noqa: F401  transformers imports lazily: load its
    transformers.BertForMaskedLM                                        # BERT code now, so the baseline holds all code
    baseline = _rss_mb()
    r = Runner(impl, mode, CONFIGS[config][0], batch_size, device)
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    else:  # building a model passes through temporaries: hand freed memory back, then measure the steps' peak
        _malloc_trim()
        _reset_peak_rss()
    for _ in range(steps): r.step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _peak_rss_mb() - baseline


def memory_in_subprocess(impl, mode, config, batch_size, device, threads) -> float:
    "Run `probe_memory` in a fresh interpreter and read its answer."
    cmd = [sys.executable, __file__, '--probe', impl, mode, config, str(batch_size), '--device', str(device), '--threads', str(threads)]
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
    p.add_argument('--probe', nargs=4, metavar=('IMPL', 'MODE', 'CONFIG', 'BATCH'), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    device = torch.device(a.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    threads = a.threads or os.cpu_count()
    torch.set_num_threads(threads)
    if a.probe:
        impl, mode, config, bs = a.probe
        print(json.dumps({'peak_mb': probe_memory(impl, mode, config, int(bs), device)}))
        return

    import transformers
    reps, warmup = a.reps or (3 if a.quick else 10), 1 if a.quick else 2
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else (platform.processor() or platform.machine())
    load = ' (load average at start %.1f: other work on the machine slows both alike)' % os.getloadavg()[0] if hasattr(os, 'getloadavg') else ''
    print(f'# bert_book vs transformers {transformers.__version__}: BertForMaskedLM, torch {torch.__version__}, '
          f'{device} ({name}), {threads} threads{load}, seq {SEQ_LEN}, {int(MASK_RATE * 100)}% MLM labels, median of {reps} alternating reps')
    mem_what = 'max_memory_allocated' if device.type == 'cuda' else 'peak RSS over post-import RSS, own process'
    print(f'| config | workload | implementation | batch | tokens/s | × transformers | peak MB ({mem_what}) | × transformers |')
    print('|---|---|---|---|---|---|---|---|')
    for config in a.configs.split(','):
        if config not in CONFIGS: p.error(f'unknown config {config!r}; choose from {list(CONFIGS)}')
        shape, bs_full, bs_quick = CONFIGS[config]
        bs = bs_quick if a.quick else bs_full
        for mode in ('train', 'infer'):
            tps = throughput(mode, shape, bs, device, warmup, reps)
            mem = {} if a.no_memory else {impl: memory_in_subprocess(impl, mode, config, bs, device, threads) for impl in IMPLS[mode]}
            for impl in IMPLS[mode]:
                m = f"{mem[impl]:.0f} | {mem[impl] / mem['transformers']:.2f}" if mem else '- | -'
                print(f"| {config} | {mode} | {impl} | {bs} | {tps[impl]:,.0f} | {tps[impl] / tps['transformers']:.2f} | {m} |", flush=True)


if __name__ == '__main__':
    main()
