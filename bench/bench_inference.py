"""Inference end to end: the book's `Engine` against transformers' `pipeline` and a plain transformers user loop, on real
texts of realistic lengths, at batch sizes 1, 8 and 32.

Two models, both all-MiniLM-L6-v2 with a new head saved as a checkpoint folder (`save_pretrained`; speed does not
depend on what the weights learnt, so nothing is fine-tuned): a tagger with WNUT-16's labels on tweets (WNUT-16 test,
words joined by spaces) and a sentence classifier (negative/positive) on review snippets (Rotten Tomatoes test).
Every implementation loads the same folder:
- transformers' `pipeline('token-classification' | 'text-classification', model=folder, device=...)`, called with
  `batch_size` (the baseline of the ratio column);
- a transformers user loop: `AutoTokenizer(texts, padding=True, truncation=True)` → `AutoModelFor...` under
  `torch.inference_mode()`, one forward per call;
- the book's `Engine.from_folder(folder)`: `encode` (per-token logits) and `ner` (entities, windows, offsets) for the
  tagger, `classify` for the classifier; and the same with `quantize='int8'` (chapter 12's served recipe).

A call hands an implementation `batch` texts (the next ones in the list) and waits for its answer; one pass sends all
the texts. Batch 'all' is the offline job: every text in one call, 32 per forward pass (the pipeline's `batch_size=32`,
the user loop in chunks of 32 in the given order, the engine in length-sorted batches of 32). Throughput = texts (and real tokens: [CLS] … [SEP] of each text, no padding) per second of a pass, the
median over `--rounds` passes; latency = p50 and p99 of the single calls over all passes. The implementations take
turns within each round (the order rotating), so machine drift hits all alike. Before timing, the outputs are checked
(the script fails otherwise): the engine's logits equal the user loop's (max |Δ| < 1e-3, the same arg-max labels),
the pipeline's labels are the user loop's, the engine's class probabilities are the loop's; int8's agreement with
float32 is reported (random heads have small margins, so some labels flip).

The FLOP/s line counts the full model's matrix products on the real tokens for every row; the book's classifier runs
its last block for the [CLS] row only (`cls_only`, chapter 4), so its rate there is an effective one (work skipped counts
as done). The ceiling line: what the full work would take at the measured matmul peak, as a multiple of the pipeline —
no implementation that does all of the model's work can beat it.

    python bench/bench_inference.py                        # full: 160 texts per model, batch 1, 8, 32, all; 3 rounds
    python bench/bench_inference.py --quick --threads 1    # a smoke run
    python bench/bench_inference.py --texts 500 --rounds 5 --device cuda
"""
from __future__ import annotations
import argparse, shutil, sys, tempfile, time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _e2e  # noqa: E402
import torch  # noqa: E402

TOKENIZER_FILES = ('vocab.txt', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')


def build_folders(root: Path, minilm: str) -> dict[str, Path]:
    "MiniLM with a new tagger head (WNUT-16 labels) and with a new classifier head, each saved as a checkpoint folder."
    from bert_book.classification import new_classifier
    from bert_book.datasets import wnut16
    from bert_book.pretrained import from_pretrained, save_pretrained
    from bert_book.alignment import label_list_for
    from bert_book.tokenizer import BertTokenizer
    tok = BertTokenizer.from_pretrained(minilm)
    tags = label_list_for(wnut16('train'))
    torch.manual_seed(0)
    tagger = from_pretrained(minilm, 'token-classification', device='cpu', num_labels=len(tags),
                             id2label=dict(enumerate(tags)), label2id={t: i for i, t in enumerate(tags)})
    classifier = new_classifier(['negative', 'positive'], minilm, seed=0)
    return {'tagger': save_pretrained(tagger, tok, root / 'tagger'), 'classifier': save_pretrained(classifier, tok, root / 'classifier')}


def texts_for(model: str, n: int) -> list[str]:
    "Real texts: WNUT-16 test tweets (words joined by spaces) for the tagger, Rotten Tomatoes test snippets for the classifier."
    from bert_book.datasets import rotten_tomatoes, wnut16
    if model == 'tagger': return [' '.join(s.tokens) for s in wnut16('test')][:n]
    return [x.text for x in rotten_tomatoes('test')][:n]


class UserLoop:
    "What a transformers user writes: tokenizer with padding → model, one forward per call."
    def __init__(self, folder, task, device):
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
        cls = AutoModelForTokenClassification if task == 'tagger' else AutoModelForSequenceClassification
        self.tok, self.device = AutoTokenizer.from_pretrained(folder), device
        self.model = cls.from_pretrained(folder).to(device).eval()

    @torch.inference_mode()
    def __call__(self, texts, batch: int = 32):
        if len(texts) > batch: return [x for k in range(0, len(texts), batch) for x in self(texts[k:k + batch], batch)]
        enc = self.tok(texts, padding=True, truncation=True, return_tensors='pt').to(self.device)
        logits = self.model(**enc).logits.float().cpu()
        if logits.dim() == 2: return list(logits)
        return [row[:n] for row, n in zip(logits, enc['attention_mask'].sum(1).tolist())]


def implementations(folders, task, device, batch) -> dict:
    "Name → callable(texts) for one model and batch size (0: all texts in one call, 32 per forward pass)."
    from transformers import pipeline
    from bert_book.engine import Engine
    folder = str(folders[task])
    kind = 'token-classification' if task == 'tagger' else 'text-classification'
    pipe = pipeline(kind, model=folder, device=device)
    fp32 = Engine.from_folder(folder, device=device, batch_size=32)
    out = {'transformers pipeline': lambda t: pipe(t, batch_size=batch or 32), 'transformers user loop': UserLoop(folder, task, device)}
    if task == 'tagger':
        out |= {'Engine.encode': fp32.encode, 'Engine.ner': fp32.ner}
    else:
        out |= {'Engine.classify': fp32.classify}
    if device == 'cpu':
        int8 = Engine.from_folder(folder, device=device, batch_size=32, quantize='int8')
        out[f'Engine.{"encode" if task == "tagger" else "classify"} int8'] = int8.encode if task == 'tagger' else int8.classify
    return out


def check_outputs(task, impls, texts) -> list[str]:
    "Assert that the float32 implementations agree with the user loop; return lines describing the agreement."
    loop = impls['transformers user loop']
    ref = [x for k in range(0, len(texts), 8) for x in loop(texts[k:k + 8])]
    lines = []
    if task == 'tagger':
        enc = impls['Engine.encode'](texts)
        diff = max(float((e['logits'] - r).abs().max()) for e, r in zip(enc, ref) if e['logits'].shape == r.shape)
        same_shape = sum(e['logits'].shape == r.shape for e, r in zip(enc, ref))
        assert same_shape == len(texts), f'Engine.encode: {len(texts) - same_shape} texts tokenized to another length than transformers'
        assert diff < 1e-3, f'Engine.encode logits differ from the user loop by {diff:.2e}'
        assert all(torch.equal(e['logits'].argmax(-1), r.argmax(-1)) for e, r in zip(enc, ref)), 'Engine.encode labels differ'
        got = impls['transformers pipeline'](texts)
        mism = sum(int(ref[i][ent['index']].argmax()) != impls_label_id(impls, ent['entity']) for i, ents in enumerate(got) for ent in ents)
        n = sum(len(ents) for ents in got)
        assert n and mism == 0, f'the pipeline gave {mism} of {n} token labels other than the user loop'
        q = [k for k in impls if k.endswith('int8')]
        lines.append(f'outputs agree: Engine.encode logits = user loop (max |Δ| {diff:.1e}, same labels); pipeline labels = user loop ({n} tokens)')
        if q:
            same = [float((e['logits'].argmax(-1) == r.argmax(-1)).float().mean()) for e, r in zip(impls[q[0]](texts), ref)]
            lines.append(f'int8: {sum(same) / len(same):.1%} of the token labels as float32')
    else:
        got = impls['Engine.classify'](texts)
        probs = torch.stack(ref).softmax(-1)
        diff = max(abs(g['score'] - float(p.max())) for g, p in zip(got, probs))
        labels = ['negative', 'positive']
        assert diff < 1e-4, f'Engine.classify probabilities differ from the user loop by {diff:.2e}'
        assert all(g['label'] == labels[int(p.argmax())] for g, p in zip(got, probs)), 'Engine.classify labels differ'
        pipe = impls['transformers pipeline'](texts)
        assert all(x['label'] == labels[int(p.argmax())] for x, p in zip(pipe, probs)), 'the pipeline labels differ from the user loop'
        lines.append(f'outputs agree: Engine.classify = user loop (max |Δp| {diff:.1e}, same labels); pipeline labels = user loop')
        q = [k for k in impls if k.endswith('int8')]
        if q:
            same = sum(g['label'] == labels[int(p.argmax())] for g, p in zip(impls[q[0]](texts), probs)) / len(texts)
            lines.append(f'int8: {same:.1%} of the labels as float32')
    return lines


def impls_label_id(impls, label: str) -> int:
    return impls['transformers user loop'].model.config.label2id[label]


def passes(impls, texts, batch, rounds) -> tuple[dict, dict]:
    "Per implementation: the seconds of each pass over `texts`, and every call's latency."
    lat = {k: [] for k in impls}
    def one_pass(name):
        fn = impls[name]
        def go():
            t_all = 0.0
            for k in range(0, len(texts), batch or len(texts)):
                t0 = time.perf_counter(); fn(texts[k:k + (batch or len(texts))]); dt = time.perf_counter() - t0
                lat[name].append(dt); t_all += dt
            return t_all
        return go
    fns = {k: one_pass(k) for k in impls}
    for name in impls:   # warm-up: one call each
        impls[name](texts[:batch or 32])
    times = _e2e.alternate(fns, rounds)
    return times, lat


def padding_line(lengths) -> str:
    """The padding in batches of 32 as the texts come (what the pipeline and the user loop compute) and length-sorted:
    the work the engine's unpadded blocks (chapter 4) skip at batch 32, and what its length-sorted batch "all" would
    carry without them."""
    return (f'padding in batches of 32: {_e2e.padded_share(lengths, 32):.1%} of the positions in the given order (pipeline, user loop; '
            f'the engine skips it), {_e2e.padded_share(lengths, 32, sort=True):.1%} length-sorted (the engine\'s batch "all")')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='a smoke run: 32 texts per model, batch 1, 8 and all, one round')
    p.add_argument('--threads', type=int, default=2, help='torch threads (default: %(default)s)')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default: %(default)s; int8 rows on the CPU only)")
    p.add_argument('--texts', type=int, default=None, help='texts per model (default 160, --quick 32)')
    p.add_argument('--rounds', type=int, default=None, help='passes per implementation, the median kept (default 3, --quick 1)')
    p.add_argument('--batches', default=None,
                   help="comma-separated texts per call; 'all': every text in one call, 32 per forward (default 1,8,32,all; --quick 1,8,all)")
    p.add_argument('--models', default='tagger,classifier', help='comma-separated: tagger, classifier')
    a = p.parse_args(argv)
    _e2e.setup(a.threads)
    n, rounds = a.texts or (32 if a.quick else 160), a.rounds or (1 if a.quick else 3)
    batches = [0 if b == 'all' else int(b) for b in (a.batches or ('1,8,all' if a.quick else '1,8,32,all')).split(',')]
    device = torch.device(a.device)
    print(f'# inference: bert_book Engine vs transformers pipeline and user loop, all-MiniLM-L6-v2 with new heads; '
          f'{_e2e.machine_line(device, a.threads)}; {n} texts per model, median of {rounds} pass(es)')
    root = Path(tempfile.mkdtemp(prefix='bench_inference_'))
    try:
        folders = build_folders(root, _e2e.minilm_folder())
        from transformers import AutoConfig
        cfg = AutoConfig.from_pretrained(str(folders['tagger']))
        for task in a.models.split(','):
            texts = texts_for(task, n)
            from transformers import AutoTokenizer
            lengths = [len(x) for x in AutoTokenizer.from_pretrained(str(folders[task]))(texts, truncation=True)['input_ids']]
            tokens = sum(lengths)                     # real tokens: [CLS] … [SEP] of each text, no padding
            C = len(cfg.id2label) if task == 'tagger' else 2
            flops = _e2e.forward_flops(_e2e.shape_of(cfg), lengths, **({'head_per_token': 2 * cfg.hidden_size * C} if task == 'tagger'
                                                                    else {'head_per_seq': 2 * (cfg.hidden_size ** 2 + cfg.hidden_size * C)}))
            what = 'WNUT-16 test tweets' if task == 'tagger' else 'Rotten Tomatoes test snippets'
            print(f'\n## {task}: {len(texts)} {what}, {tokens:,} real tokens ({tokens / len(texts):.1f} per text, longest {max(lengths)})')
            print(padding_line(lengths))
            rows, achieved = [], {}
            for batch in batches:
                impls = implementations(folders, task, a.device, batch)
                if batch == batches[0]:
                    for line in check_outputs(task, impls, texts): print(line)
                times, lat = passes(impls, texts, batch, rounds)
                base = _e2e.median(times['transformers pipeline'])
                for name, ts in times.items():
                    t = _e2e.median(ts)
                    rows.append([batch or f'all ({len(texts)})', name, f'{len(texts) / t:,.1f}', f'{tokens / t:,.0f}', f'{base / t:.2f}x',
                                 f'{_e2e.percentile(lat[name], 50) * 1e3:.1f}', f'{_e2e.percentile(lat[name], 99) * 1e3:.1f}'])
                    if batch == batches[-1]: achieved[name] = flops / t
            print(_e2e.table(['batch', 'implementation', 'texts/s', 'real tokens/s', 'vs pipeline', 'p50 ms/call', 'p99 ms/call'], rows))
            print(_e2e.peak_line(device, achieved, baseline='transformers pipeline') + f' (batch {batches[-1] or "all"})')
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
