"""MLM pre-training end to end: the book's `pretrain_mlm` against transformers' `Trainer` + `BertForMaskedLM` +
`DataCollatorForLanguageModeling`, on the same corpus, with the same tokenizer, model shape and settings, for the
same number of optimizer steps.

The corpus is the book's bundled one (`bert_book.data.load_corpus()`, one sentence per line): the last 400 lines are
held out for validation, and a WordPiece vocabulary is trained on the rest (`train_wordpiece`, as chapter 6a does)
and saved as a folder that both sides load (the book's `BertTokenizer`, transformers' `AutoTokenizer`: the same ids).
The model is the book's compact BERT (`compact_config`: 4 layers, hidden 256, 4 heads, feed-forward 1024, 128
positions), from random weights (seed 0 on both sides). Settings on both sides: `--steps` optimizer steps, batch 32,
lr 1e-3 (the book's pre-training rate), linear decay after a 6% warm-up (the same integer number of steps), AdamW with
weight decay 0.01 on matrices, eps 1e-6, clipping at 1.0, 15% of the tokens masked 80/10/10, fp32 (or bf16 autocast on
both sides with `--precision bf16`: transformers' `bf16=True`, the book's `precision='bf16'`), one validation at
the end. Each row runs in a fresh process (no row inherits another's allocator state or kernel caches). Each side runs its own default way: the book `masked_only` (the MLM head scores only the masked positions),
transformers the full (B, T, V) logits; the book's `group_by_length` and transformers' (`train_sampling_strategy=
'group_by_length'`) are rows of their own (`pretrain_mlm`'s own default config groups by length).

Timed: the whole call, from tokenizing the corpus and building the model to the trained model (its validation
included). Throughput: real training tokens (no padding) per second of the call. Quality: validation perplexity of
each trained model on the same held-out batches with the same fixed masks (the book's `fixed_eval_batches`, scored
by `evaluate_batches` on both), the book's rows must agree with transformers' default row within `--tolerance` (a ratio).

    python bench/bench_pretrain.py                        # full: 300 steps
    python bench/bench_pretrain.py --quick --threads 1    # a smoke run: 25 steps
    python bench/bench_pretrain.py --steps 500 --rounds 3 --device cuda
    python bench/bench_pretrain.py --precision both       # fp32 rows, then bf16 rows
"""
from __future__ import annotations
import argparse, json, math, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _e2e  # noqa: E402
import torch  # noqa: E402

PRECISION = {'value': 'fp32'}   # both sides' precision for the rows being run (--precision)
BATCH, LR, WEIGHT_DECAY, WARMUP_RATIO, ADAM_EPS, MAX_GRAD_NORM, MLM_PROBABILITY, SEED, N_EVAL = 32, 1e-3, 0.01, 0.06, 1e-6, 1.0, 0.15, 0, 400


def corpus_and_tokenizer(folder: Path):
    "Training and validation texts, and a WordPiece tokenizer trained on the training texts, saved in `folder`."
    from bert_book.data import load_corpus
    from bert_book.tokenizer import train_wordpiece
    texts = load_corpus()
    train, valid = texts[:-N_EVAL], texts[-N_EVAL:]
    train_wordpiece(train, vocab_size=8000).save(folder)
    return train, valid


def book_row(tok_folder, train, valid, steps, device, group) -> dict:
    "pretrain_mlm with the settings of the module docstring; returns time and the model."
    from bert_book.mlm import compact_config, pretrain_mlm
    from bert_book.tokenizer import BertTokenizer
    from bert_book.training import TrainingConfig
    t0 = time.perf_counter()
    tok = BertTokenizer.from_pretrained(tok_folder)
    cfg = TrainingConfig(max_steps=steps, batch_size=BATCH, lr=LR, weight_decay=WEIGHT_DECAY, adam_eps=ADAM_EPS,
                         warmup_steps=int(WARMUP_RATIO * steps), max_grad_norm=MAX_GRAD_NORM, precision=PRECISION['value'],
                         group_by_length=group, load_best_at_end=False, progress=False, seed=SEED, device=device)
    model, _ = pretrain_mlm(train, valid, tokenizer=tok, config=compact_config(tok.vocab_size), training=cfg,
                            mlm_probability=MLM_PROBABILITY, seed=SEED)
    _e2e.sync(torch.device(device))
    return dict(total=time.perf_counter() - t0, model=model)


def hf_row(tok_folder, train, valid, steps, device, group) -> dict:
    "Trainer + BertForMaskedLM + DataCollatorForLanguageModeling, the same shape and settings."
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments
    from bert_book.mlm import compact_config
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tok_folder)
    shape = compact_config(tok.vocab_size)
    enc = lambda texts: [{'input_ids': ids} for ids in tok([t for t in texts if t.strip()], truncation=True, max_length=shape.max_position_embeddings)['input_ids']]
    train_ds, valid_ds = enc(train), enc(valid)
    torch.manual_seed(SEED)
    model = BertForMaskedLM(BertConfig(vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, num_hidden_layers=shape.num_hidden_layers,
                                       num_attention_heads=shape.num_attention_heads, intermediate_size=shape.intermediate_size,
                                       max_position_embeddings=shape.max_position_embeddings, attn_implementation='sdpa'))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=BATCH, per_device_eval_batch_size=64,
            learning_rate=LR, weight_decay=WEIGHT_DECAY, adam_epsilon=ADAM_EPS, max_grad_norm=MAX_GRAD_NORM,
            warmup_steps=int(WARMUP_RATIO * steps), lr_scheduler_type='linear', eval_strategy='steps', eval_steps=steps,
            save_strategy='no', logging_strategy='no', report_to=[], disable_tqdm=True, dataloader_num_workers=0,
            use_cpu=device == 'cpu', seed=SEED, bf16=PRECISION['value'] == 'bf16', train_sampling_strategy='group_by_length' if group else 'random')
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds,
                          data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=MLM_PROBABILITY))
        trainer.train()
    _e2e.sync(torch.device(device))
    return dict(total=time.perf_counter() - t0, model=model)


ROWS = {'transformers Trainer': (hf_row, False), 'transformers Trainer, group_by_length': (hf_row, True),
        'bert_book pretrain_mlm, group_by_length (its default)': (book_row, True), 'bert_book pretrain_mlm': (book_row, False)}


def validation_perplexity(model, tok_folder, valid, device) -> float:
    "exp(mean loss) over the masked positions of the held-out texts, masks fixed by the book's `fixed_eval_batches`."
    from bert_book.masking import MLMCollator
    from bert_book.mlm import fixed_eval_batches, tokenize_corpus
    from bert_book.tokenizer import BertTokenizer
    from bert_book.training import evaluate_batches
    tok = BertTokenizer.from_pretrained(tok_folder)
    batches = fixed_eval_batches(tokenize_corpus(valid, tok, 128), MLMCollator.from_tokenizer(tok, seed=SEED, mlm_probability=MLM_PROBABILITY))
    batches = [{k: v for k, v in b.items() if k != 'token_type_ids'} for b in batches]
    return math.exp(evaluate_batches(model, batches, torch.device(device))['loss'])


def run_row(name, tok_folder, steps, device) -> dict:
    "One row in a fresh Python process (`--one`): its total seconds and validation perplexity."
    spec = json.dumps([name, str(tok_folder), steps, device, PRECISION['value']])
    out = subprocess.run([sys.executable, __file__, '--one', spec, '--threads', str(torch.get_num_threads())],
                         capture_output=True, text=True)
    if out.returncode != 0: raise RuntimeError(f'row {name!r} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_row(spec: str) -> None:
    "Run the row `spec` names here (the corpus split as `corpus_and_tokenizer` makes it); print a JSON line."
    from bert_book.data import load_corpus
    name, tok_folder, steps, device, PRECISION['value'] = json.loads(spec)
    texts = load_corpus()
    train, valid = texts[:-N_EVAL], texts[-N_EVAL:]
    fn, group = ROWS[name]
    res = fn(tok_folder, train, valid, steps, device, group)
    print(json.dumps({'total': res['total'], 'perplexity': validation_perplexity(res['model'], tok_folder, valid, device)}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='a smoke run: 25 steps')
    p.add_argument('--threads', type=int, default=2, help='torch threads (default: %(default)s)')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default: %(default)s)")
    p.add_argument('--steps', type=int, default=None, help='optimizer steps (default 300, --quick 25)')
    p.add_argument('--rounds', type=int, default=1, help='runs of every row, the median time kept (default: %(default)s)')
    p.add_argument('--tolerance', type=float, default=None,
                   help='largest allowed ratio between the validation perplexities of the rows (default 1.15, --quick 1.3)')
    p.add_argument('--precision', choices=('fp32', 'bf16', 'both'), default='fp32',
                   help="both sides' precision; 'both' runs the fp32 rows, then the bf16 rows (default: %(default)s)")
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)   # one row, in the subprocess run_row starts
    a = p.parse_args(argv)
    _e2e.setup(a.threads)
    if a.one: one_row(a.one); return 0
    ok = True
    for precision in (('fp32', 'bf16') if a.precision == 'both' else (a.precision,)):
        PRECISION['value'] = precision
        ok &= run_precision(a) == 0
    return 0 if ok else 1


def run_precision(a) -> int:
    "The table of one precision."
    steps = a.steps or (25 if a.quick else 300)
    tolerance = a.tolerance or (1.3 if a.quick else 1.15)
    device = torch.device(a.device)
    print(f'# MLM pre-training end to end: bert_book pretrain_mlm vs transformers Trainer; {_e2e.machine_line(device, a.threads)}')
    with tempfile.TemporaryDirectory() as tmp:
        train, valid = corpus_and_tokenizer(Path(tmp))
        from bert_book.mlm import compact_config
        from bert_book.tokenizer import BertTokenizer
        tok = BertTokenizer.from_pretrained(tmp)
        shape = compact_config(tok.vocab_size)
        lengths = [len(x) for x in tok(train, truncation=True, max_length=128)['input_ids']]
        mean_len = sum(lengths) / len(lengths)
        tokens = steps * BATCH * mean_len   # real tokens trained on: the same number of examples on both sides
        results = {n: [] for n in ROWS}
        for r in range(a.rounds):
            names = list(ROWS)
            for name in names[r % len(names):] + names[:r % len(names)]:
                res = run_row(name, tmp, steps, a.device)
                results[name].append(res)
                print(f'  round {r + 1}: {name}: {res["total"]:.1f} s, perplexity {res["perplexity"]:.1f}', file=sys.stderr, flush=True)
        med = {n: _e2e.median([x['total'] for x in xs]) for n, xs in results.items()}
        ppl = {n: _e2e.median([x['perplexity'] for x in xs]) for n, xs in results.items()}
        base = med['transformers Trainer']
        print(f'\n{len(train)} training texts ({mean_len:.1f} tokens each on average), {len(valid)} validation texts, vocabulary '
              f'{tok.vocab_size}; compact BERT (L={shape.num_hidden_layers}, H={shape.hidden_size}); {PRECISION["value"]} on both sides; {steps} steps of batch {BATCH}, '
              f'lr {LR}, {int(WARMUP_RATIO * steps)} warm-up steps; median of {a.rounds} round(s)')
        print(_e2e.table(['implementation', 'total s', 'real tokens/s', 'speed vs transformers', 'validation perplexity (fixed masks)'],
                         [[n, f'{med[n]:.1f}', f'{tokens / med[n]:,.0f}', f'{base / med[n]:.2f}x', f'{ppl[n]:.1f}'] for n in ROWS]))
        # model FLOPs of the training steps on real tokens: 3 × forward; the MLM head at the 15% scored positions
        # (what the work needs; transformers' full logits count as waste, like padding)
        H, V = shape.hidden_size, shape.vocab_size
        per_example = _e2e.forward_flops((shape.num_hidden_layers, H, shape.intermediate_size), lengths) / len(lengths) \
            + 2 * MLM_PROBABILITY * mean_len * (H * H + H * V)
        flops = 3 * steps * BATCH * per_example
        print(_e2e.peak_line(device, {n.split(',')[0].replace(' Trainer', '').replace(' pretrain_mlm', '') + (' grouped' if ',' in n else ''):
                                      flops / med[n] for n in ROWS}))
        # the book's rows against transformers' default recipe (what a user would otherwise run); transformers' own
        # group_by_length row is reported, not judged (at 300 steps its perplexity can be far off: see the table)
        ref = ppl['transformers Trainer']
        spread = max(max(ppl[n] / ref, ref / ppl[n]) for n in ROWS if n.startswith('bert_book'))
        other = ppl.get('transformers Trainer, group_by_length')
        if other is not None: print(f"transformers' group_by_length row: perplexity {other / ref:.2f}x its default's")
        if spread > tolerance:
            print(f'FAILED: the book\'s validation perplexity differs from transformers\' by a factor {spread:.3f} > tolerance {tolerance}')
            return 1
        print(f'quality agrees: the book\'s validation perplexities within a factor {spread:.3f} of transformers\' (tolerance {tolerance})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
