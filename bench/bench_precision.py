"""Precision and runtimes on the CPU: the book's Engine in float32, bfloat16 and int8, and the model exported to ONNX
(`bert_book.runtimes.export_onnx`) run by onnxruntime in float32 and dynamic int8, against transformers' pipeline.

all-MiniLM-L6-v2 with a new sentence-classifier head (`bench_inference.build_folders`; speed does not depend on what
the weights learnt), Rotten Tomatoes test snippets, every text in one call (the offline job), 32 per forward pass.
Rows take turns in each round (the order rotating: `_e2e.alternate`); the median of `--rounds` passes is kept.
Agreement is against Engine float32: the share of texts with the same label and the largest change of a probability.
onnxruntime sees the same length-sorted batches as the engine (it serves through the engine: `bb.load(onnx_folder)`).

    python bench/bench_precision.py                 # 1,000 texts, 3 rounds, 2 threads
    python bench/bench_precision.py --quick         # a smoke run: 64 texts, one round
"""
from __future__ import annotations
import argparse, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _e2e  # noqa: E402
import torch  # noqa: E402
from bench_inference import build_folders, texts_for  # noqa: E402


def onnx_int8(folder: Path, out: Path) -> Path:
    "A copy of an exported ONNX folder with onnxruntime's dynamic int8 quantisation of its MatMul weights."
    import shutil
    from onnxruntime.quantization import QuantType, quantize_dynamic
    shutil.copytree(folder, out)
    quantize_dynamic(str(folder / 'model.onnx'), str(out / 'model.onnx'), weight_type=QuantType.QInt8)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='a smoke run: 64 texts, one round')
    p.add_argument('--threads', type=int, default=2, help='torch and onnxruntime threads (default: %(default)s)')
    p.add_argument('--texts', type=int, default=None, help='texts (default 1000, --quick 64)')
    p.add_argument('--rounds', type=int, default=None, help='passes per row, the median kept (default 3, --quick 1)')
    a = p.parse_args(argv)
    n, rounds = a.texts or (64 if a.quick else 1000), a.rounds or (1 if a.quick else 3)
    _e2e.setup(a.threads)
    from transformers import pipeline
    from bert_book.engine import Engine, load
    from bert_book.runtimes import export_onnx
    from bert_book.training import cpu_has_bf16
    device = torch.device('cpu')
    texts = texts_for('classifier', n)
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        folder = build_folders(root, _e2e.minilm_folder())['classifier']
        onnx32 = export_onnx(folder, root / 'onnx')
        onnx8 = onnx_int8(onnx32, root / 'onnx-int8')
        pipe = pipeline('text-classification', model=str(folder), device=device)
        engines = {'Engine fp32': Engine.from_folder(folder, device='cpu'),
                   'Engine bf16': Engine.from_folder(folder, device='cpu', dtype='bfloat16'),
                   'Engine int8': Engine.from_folder(folder, device='cpu', quantize='int8'),
                   'ONNX Runtime fp32': load(onnx32), 'ONNX Runtime int8': load(onnx8)}
        tokens = sum(len(ids) for ids in engines['Engine fp32'].tokenizer(texts)['input_ids'])
        probs = {name: torch.tensor([list(r['scores'].values()) for r in e.classify(texts)]) for name, e in engines.items()}
        fns = {'transformers pipeline': lambda: pipe(texts, batch_size=32)}
        fns |= {name: (lambda e=e: e.classify(texts)) for name, e in engines.items()}
        times = _e2e.alternate(fns, rounds, warmup=0 if a.quick else 1)
        print(f'{_e2e.machine_line(device, a.threads)}; bf16 instructions: {cpu_has_bf16()}; {n} texts, {tokens:,} real tokens, '
              f'median of {rounds} pass(es), rows alternating')
        base, ref = _e2e.median(times['transformers pipeline']), probs['Engine fp32']
        rows = []
        for name, ts in times.items():
            t = _e2e.median(ts)
            agree = ('—', '—') if name not in probs else (
                f'{100 * (probs[name].argmax(-1) == ref.argmax(-1)).float().mean():.1f}%', f'{(probs[name] - ref).abs().max():.4f}')
            rows.append([name, f'{tokens / t:,.0f}', f'{base / t:.2f}x', *agree])
        print(_e2e.table(['row', 'real tokens/s', 'vs pipeline', 'same label', 'max |Δp| vs Engine fp32'], rows))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
