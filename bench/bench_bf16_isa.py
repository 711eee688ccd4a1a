"""bf16 on a CPU with and without bf16 instructions: one fine-tuning step of all-MiniLM-L6-v2 (the book's
`BertForTokenClassification`, forward, backward and fused AdamW on 16 x 32 tokens) in float32 and under bf16 autocast.

The rows without bf16 instructions run on this machine with oneDNN held to an older instruction set
(`ONEDNN_MAX_CPU_ISA`: AVX512_CORE has AVX-512 but not `avx512_bf16`/AMX, as Skylake-era Xeons; AVX2 as older and
desktop CPUs), so torch converts or emulates bf16 there. Why `precision='auto'` picks bf16 only where `cpu_has_bf16()`:
on the other rows bf16 is slower than float32. Each row runs in a fresh process; ms per step is the median of 5 x 10
steps after 3 warm-up steps.

    python bench/bench_bf16_isa.py              # native, AVX512_CORE, AVX2; 2 threads
    python bench/bench_bf16_isa.py --quick      # native and AVX512_CORE only, 2 x 5 steps
"""
from __future__ import annotations
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _e2e  # noqa: E402

ISAS = {'native': None, 'AVX512_CORE (no bf16 instructions)': 'AVX512_CORE', 'AVX2 (no AVX-512)': 'AVX2'}


def step_ms(repeats: int, steps: int) -> dict:
    "ms per training step in fp32 and in bf16 autocast, in this process."
    import torch
    from bert_book.pretrained import from_pretrained
    from bert_book.training import keep_freed_memory
    keep_freed_memory()
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (16, 32))
    mask, labels = torch.ones_like(ids), torch.randint(0, 9, (16, 32))
    model = from_pretrained(_e2e.minilm_folder(), 'token-classification', num_labels=9, device='cpu').train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step(bf16: bool):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            loss = model(ids, mask, labels=labels).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

    out = {}
    for name, bf16 in (('fp32', False), ('bf16', True)):
        for _ in range(3): step(bf16)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(steps): step(bf16)
            times.append((time.perf_counter() - t0) / steps * 1e3)
        out[name] = statistics.median(times)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='native and AVX512_CORE only, 2 x 5 steps')
    p.add_argument('--threads', type=int, default=2, help='torch threads (default: %(default)s)')
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)   # the row a fresh process runs
    a = p.parse_args(argv)
    repeats, steps = (2, 5) if a.quick else (5, 10)
    _e2e.setup(a.threads)
    if a.one is not None:
        print(json.dumps(step_ms(repeats, steps)))
        return 0
    import torch
    from bert_book.training import cpu_has_bf16
    print(f'{_e2e.machine_line(torch.device("cpu"), a.threads)}; bf16 instructions: {cpu_has_bf16()}')
    rows = []
    for label, isa in list(ISAS.items())[:2 if a.quick else None]:
        env = {**os.environ, **({'ONEDNN_MAX_CPU_ISA': isa} if isa else {})}
        args = [sys.executable, __file__, '--one', label, '--threads', str(a.threads)] + (['--quick'] if a.quick else [])
        run = subprocess.run(args, env=env, capture_output=True, text=True)
        if run.returncode: raise SystemExit(f'{label}: {run.stderr[-2000:]}')
        ms = json.loads(run.stdout.strip().splitlines()[-1])
        rows.append([label, f"{ms['fp32']:.0f}", f"{ms['bf16']:.0f}", f"{ms['fp32'] / ms['bf16']:.2f}x"])
    print(_e2e.table(['oneDNN instruction set', 'fp32 ms/step', 'bf16 ms/step', 'bf16 speed vs fp32'], rows))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
