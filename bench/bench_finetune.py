"""Fine-tuning end to end: the book's `train_ner` / `train_classifier` against transformers' `Trainer`, from the same
pretrained folder (all-MiniLM-L6-v2), on the same data, with the same hyperparameters.

Two tasks:
- NER on the book's sample set (template sentences, IOB2): `bert_book.token_classification.train_ner(encoder=MiniLM)`
  against `Trainer` + `AutoModelForTokenClassification` + `DataCollatorForTokenClassification`, the usual recipe
  (the word's label on its first sub-word, −100 elsewhere; dev F1 in `compute_metrics`).
- Sentiment on real review snippets (Rotten Tomatoes): `bert_book.classification.train_classifier` against `Trainer`
  + `AutoModelForSequenceClassification` + `DataCollatorWithPadding`.

The same settings on both sides: epochs, batch 16, lr (5e-5 for NER, 1e-4 for sentiment), linear decay after the book's default warm-up (6% of the
steps, the same integer number of steps on both sides), AdamW with weight decay 0.01 on matrices only, eps 1e-6,
gradient clipping at 1.0, fp32 (or bf16 autocast on both sides with `--precision bf16`), one dev evaluation per epoch, no checkpoint saving (the book: `load_best_at_end=False`;
transformers: `save_strategy='no'`), no data-loader workers, no logging integrations. Each side's optimizer is its own
default (both fused AdamW on the CPU now: the book's was foreach until this benchmark's profile found its step 5x
slower than transformers' `adamw_torch_fused`). transformers' `group_by_length`
(`train_sampling_strategy='group_by_length'`) and the book's (`TrainingConfig.group_by_length`) are extra rows: off by
default in both.

Timed: the whole call, from tokenizing the data and loading the pretrained weights to the trained model (dev
evaluations included, the test evaluation not); per epoch: the time between the ends of consecutive dev evaluations
(the first from the start of the training loop). Quality: test entity F1 (seqeval's default mode, `ner_scores`;
words tagged from their first sub-word on both sides) and test accuracy; the script fails if the two sides differ by
more than `--tolerance` (or a side is no better than a floor). `--quick` uses a higher learning rate (5e-4 for NER,
2e-4 for sentiment, both sides) so that its ~20 steps learn something, and skips the group_by_length rows. Rows run one after the other, each in a fresh process, the order rotating each
round; with `--rounds` > 1 the median time is kept.

After each table: the padding line (the share of padding in shuffled and length-sorted batches, and the most length
grouping can therefore buy: 1 / (1 - share)) and the physical-limit line (the matmul peak, each row's model FLOP/s).

    python bench/bench_finetune.py                         # full: NER 1,000 sentences × 2 epochs, sentiment 1,000 × 1 at lr 1e-4
    python bench/bench_finetune.py --quick --threads 1     # a smoke run: 300 / 200 examples, 1 epoch, no grouped rows (~1.5 min)
    python bench/bench_finetune.py --tasks ner --train 1000 --epochs 3   # the converged comparison (test F1 ≈ 0.90)
    python bench/bench_finetune.py --tasks ner --rounds 3  # NER only, median of 3
    python bench/bench_finetune.py --device cuda
    python bench/bench_finetune.py --precision both        # fp32 rows, then bf16 rows (Trainer(bf16=True) vs precision='bf16')
"""
from __future__ import annotations
import argparse, json, math, subprocess, sys, tempfile, time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _e2e  # noqa: E402

BATCH, LR, WEIGHT_DECAY, WARMUP_RATIO, ADAM_EPS, MAX_GRAD_NORM, SEED = 16, 5e-5, 0.01, 0.06, 1e-6, 1.0, 0
PRECISION = {'value': 'fp32'}   # both sides' precision for the rows being run: 'fp32' or 'bf16' (--precision)
SIZES = {  # task: (train, dev, test, epochs, lr) full / quick (a higher rate, so that ~20 steps learn something)
    'ner': ((1000, 300, 300, 2, LR), (300, 100, 200, 1, 5e-4)),
    'sentiment': ((1000, 300, 600, 1, 1e-4), (200, 100, 200, 1, 2e-4)),   # 400 x 2 at 5e-5 stayed at the majority class
}
FLOORS = {'ner': (0.5, 0.3), 'sentiment': (0.7, 0.55)}  # full / quick: a side below this did not learn (a broken comparison)


def warmup_steps(n_train: int, epochs: int) -> int:
    "The book's default warm-up, int(6% of the steps), given to both sides as a number of steps."
    return int(WARMUP_RATIO * epochs * math.ceil(n_train / BATCH))


# --- data ----------------------------------------------------------------------------------------------------------

def ner_data(n_train: int, n_dev: int, n_test: int):
    from bert_book.data import load_sample
    return load_sample('train')[:n_train], load_sample('dev')[:n_dev], load_sample('test')[:n_test]


def sentiment_data(n_train: int, n_dev: int, n_test: int):
    from bert_book.datasets import rotten_tomatoes
    return rotten_tomatoes('train')[:n_train], rotten_tomatoes('dev')[:n_dev], rotten_tomatoes('test')[:n_test]


# --- the book --------------------------------------------------------------------------------------------------------

@contextmanager
def book_epoch_marks(marks: list):
    "Record the time at the start of `Trainer.fit` and after each evaluation (the book's Trainer has no callbacks)."
    from bert_book.training import Trainer
    fit, evaluate = Trainer.fit, Trainer._evaluate_and_keep_best
    def timed_fit(self, *a, **k):
        marks.append(time.perf_counter()); return fit(self, *a, **k)
    def timed_eval(self, *a, **k):
        out = evaluate(self, *a, **k); _e2e.sync(self.device); marks.append(time.perf_counter()); return out
    Trainer.fit, Trainer._evaluate_and_keep_best = timed_fit, timed_eval
    try: yield marks
    finally: Trainer.fit, Trainer._evaluate_and_keep_best = fit, evaluate


def book_config(n_train: int, epochs: int, lr: float, group: bool, device: str):
    from bert_book.training import TrainingConfig
    return TrainingConfig(num_epochs=epochs, batch_size=BATCH, lr=lr, weight_decay=WEIGHT_DECAY, adam_eps=ADAM_EPS,
                          warmup_steps=warmup_steps(n_train, epochs), max_grad_norm=MAX_GRAD_NORM, precision=PRECISION['value'],
                          group_by_length=group, load_best_at_end=False, progress=False, seed=SEED, device=device)


def book_timed(train_fn) -> tuple:
    "Run `train_fn()` (tokenizer, weights and training: what is timed); its result, the total seconds, each epoch's seconds."
    marks = []
    t0 = time.perf_counter()
    with book_epoch_marks(marks): result = train_fn()
    return result, marks[-1] - t0, [b - a for a, b in zip(marks, marks[1:])]


def book_ner(folder, data, epochs, lr, device, group=False) -> dict:
    "train_ner from the MiniLM encoder; test F1 through the book's own prediction (`evaluate_ner`)."
    from bert_book.pretrained import from_pretrained
    from bert_book.token_classification import train_ner, evaluate_ner
    from bert_book.tokenizer import BertTokenizer
    train, dev, test = data
    def run():
        tok = BertTokenizer.from_pretrained(folder)
        return tok, train_ner(train, dev, tokenizer=tok, training=book_config(len(train), epochs, lr, group, device),
                              encoder=from_pretrained(folder, device='cpu'), seed=SEED).model
    (tok, model), total, per_epoch = book_timed(run)
    scores = evaluate_ner(model, tok, test)
    return dict(total=total, epochs=per_epoch, quality=scores['f1'], predictions=scores['predictions'], model=model)


def book_sentiment(folder, data, epochs, lr, device, group=False) -> dict:
    "train_classifier on new_classifier(folder); test accuracy through `evaluate_classifier`."
    from bert_book.classification import new_classifier, train_classifier, evaluate_classifier
    from bert_book.tokenizer import BertTokenizer
    train, dev, test = data
    def run():
        tok = BertTokenizer.from_pretrained(folder)
        model = new_classifier(['negative', 'positive'], folder, seed=SEED)
        return tok, train_classifier(train, dev, tokenizer=tok, model=model,
                                     training=book_config(len(train), epochs, lr, group, device), max_length=128).model
    (tok, model), total, per_epoch = book_timed(run)
    return dict(total=total, epochs=per_epoch, quality=evaluate_classifier(model, tok, test)['accuracy'], model=model)


# --- transformers ----------------------------------------------------------------------------------------------------

def hf_args(out_dir, n_train, epochs, lr, group, device):
    from transformers import TrainingArguments
    return TrainingArguments(
        output_dir=out_dir, num_train_epochs=epochs, per_device_train_batch_size=BATCH, per_device_eval_batch_size=64,
        learning_rate=lr, weight_decay=WEIGHT_DECAY, adam_epsilon=ADAM_EPS, max_grad_norm=MAX_GRAD_NORM,
        warmup_steps=warmup_steps(n_train, epochs), lr_scheduler_type='linear', eval_strategy='epoch',
        save_strategy='no', logging_strategy='no', report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        use_cpu=device == 'cpu', bf16=PRECISION['value'] == 'bf16', seed=SEED, train_sampling_strategy='group_by_length' if group else 'random')


def hf_epoch_callback(marks: list):
    "A TrainerCallback recording the start of training and the end of each evaluation."
    from transformers import TrainerCallback
    class Marks(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw): marks.append(time.perf_counter())
        def on_evaluate(self, args, state, control, **kw): marks.append(time.perf_counter())
    return Marks()


def hf_ner_encode(tokenizer, sentences, label2id):
    "The usual recipe: tokenize the words, the word's label on its first sub-word, −100 on the others and on specials."
    enc = tokenizer([list(s.tokens) for s in sentences], is_split_into_words=True, truncation=True)
    out = []
    for i, s in enumerate(sentences):
        labels, prev = [], None
        for w in enc.word_ids(i):
            labels.append(-100 if w is None or w == prev else label2id[s.tags[w]]); prev = w
        out.append({k: enc[k][i] for k in enc.keys()} | {'labels': labels})
    return out


def hf_word_tags(pred_ids, label_ids, id2label) -> list[list[str]]:
    "Per sentence, the predicted tag of each word (its first sub-word's), where the label is not −100."
    return [[id2label[int(p)] for p, l in zip(ps, ls) if l != -100] for ps, ls in zip(pred_ids, label_ids)]


def hf_ner(folder, data, epochs, lr, device, group=False) -> dict:
    "Trainer + AutoModelForTokenClassification + DataCollatorForTokenClassification; test F1 with `ner_scores`."
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer
    from bert_book.metrics import ner_scores
    from bert_book.alignment import label_list_for
    train, dev, test = data
    labels = label_list_for(train)
    id2label, label2id = dict(enumerate(labels)), {l: i for i, l in enumerate(labels)}

    def compute_metrics(p):
        gold = hf_word_tags(p.label_ids, p.label_ids, id2label)
        return {'f1': ner_scores(gold, hf_word_tags(p.predictions.argmax(-1), p.label_ids, id2label))['f1_default']}

    marks = []
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder)
    train_ds, dev_ds = hf_ner_encode(tok, train, label2id), hf_ner_encode(tok, dev, label2id)
    model = AutoModelForTokenClassification.from_pretrained(folder, num_labels=len(labels), id2label=id2label, label2id=label2id)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=hf_args(out, len(train), epochs, lr, group, device), train_dataset=train_ds,
                          eval_dataset=dev_ds, data_collator=DataCollatorForTokenClassification(tok),
                          compute_metrics=compute_metrics, callbacks=[hf_epoch_callback(marks)])
        trainer.train()
        total = marks[-1] - t0
        trainer.args.train_sampling_strategy = 'random'   # group_by_length also reorders predict's batches: keep the order
        p = trainer.predict(hf_ner_encode(tok, test, label2id))
    pred = hf_word_tags(p.predictions.argmax(-1), p.label_ids, id2label)
    return dict(total=total, epochs=[b - a for a, b in zip(marks, marks[1:])],
                quality=ner_scores([list(s.tags) for s in test], pred)['f1_default'], predictions=pred)


def hf_sentiment(folder, data, epochs, lr, device, group=False) -> dict:
    "Trainer + AutoModelForSequenceClassification + DataCollatorWithPadding; test accuracy."
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer
    train, dev, test = data
    labels = ['negative', 'positive']
    label2id = {l: i for i, l in enumerate(labels)}

    def encode(examples):
        enc = tok([x.text for x in examples], truncation=True, max_length=128)
        return [{k: enc[k][i] for k in enc.keys()} | {'labels': label2id[x.label]} for i, x in enumerate(examples)]

    marks = []
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder)
    train_ds, dev_ds = encode(train), encode(dev)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, id2label=dict(enumerate(labels)), label2id=label2id)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=hf_args(out, len(train), epochs, lr, group, device), train_dataset=train_ds,
                          eval_dataset=dev_ds, data_collator=DataCollatorWithPadding(tok),
                          compute_metrics=lambda p: {'accuracy': float((p.predictions.argmax(-1) == p.label_ids).mean())},
                          callbacks=[hf_epoch_callback(marks)])
        trainer.train()
        total = marks[-1] - t0
        trainer.args.train_sampling_strategy = 'random'   # group_by_length also reorders predict's batches: keep the order
        p = trainer.predict(encode(test))
    return dict(total=total, epochs=[b - a for a, b in zip(marks, marks[1:])],
                quality=float((p.predictions.argmax(-1) == p.label_ids).mean()))


# --- the comparison --------------------------------------------------------------------------------------------------

ROWS = {  # task: {row: (function, group_by_length)}
    'ner': {'transformers Trainer': (hf_ner, False), 'transformers Trainer, group_by_length': (hf_ner, True),
            'bert_book train_ner': (book_ner, False), 'bert_book train_ner, group_by_length': (book_ner, True)},
    'sentiment': {'transformers Trainer': (hf_sentiment, False), 'transformers Trainer, group_by_length': (hf_sentiment, True),
                  'bert_book train_classifier': (book_sentiment, False),
                  'bert_book train_classifier, group_by_length': (book_sentiment, True)},
}


def train_lengths(folder, task, data) -> list[int]:
    "Tokens per training example, [CLS] and [SEP] included (transformers' tokenizer; the book's gives the same ids)."
    from transformers import AutoTokenizer
    tok, train = AutoTokenizer.from_pretrained(folder), data[0]
    if task == 'ner': return [len(x) for x in tok([list(s.tokens) for s in train], is_split_into_words=True)['input_ids']]
    return [len(x) for x in tok([x.text for x in train], truncation=True, max_length=128)['input_ids']]


def train_flops(folder, task, data, epochs, lengths: list[int]) -> float:
    "Model FLOPs of the training steps on the real tokens (3 × forward per example per epoch; bench/_e2e.py)."
    from transformers import AutoConfig
    cfg, train = AutoConfig.from_pretrained(folder), data[0]
    head = (dict(head_per_token=2 * cfg.hidden_size * len({t for s in train for t in s.tags})) if task == 'ner'
            else dict(head_per_seq=2 * (cfg.hidden_size ** 2 + cfg.hidden_size * 2)))
    return 3 * epochs * _e2e.forward_flops(_e2e.shape_of(cfg), lengths, **head)


def padding_line(lengths: list[int]) -> str:
    """What skipping padding can buy: the share of padding in shuffled batches (the default sampler of both sides) and in
    length-sorted ones. A step over padded batches does 1 / (1 - share) times the work of the real tokens, so neither
    length grouping nor the book's unpadded blocks (chapter 4, on by default) can make a step over the same batches
    faster than that (attention's quadratic part aside), whatever else costs the same on both sides."""
    import random
    shuffled = lengths[:]; random.Random(SEED).shuffle(shuffled)
    p = _e2e.padded_share(shuffled, BATCH)
    return (f'padding in batches of {BATCH}: {p:.1%} shuffled, {_e2e.padded_share(lengths, BATCH, sort=True):.1%} length-sorted; skipping it all makes '
            f'the steps at most {1 / (1 - p):.2f}x faster (the ceiling of length grouping and of unpadding over transformers\' default)')


def run_row(task, name, sizes, device) -> dict:
    """One row in a fresh Python process (`--one`): no row inherits another's allocator state, oneDNN kernel cache or
    warm-up (the book's trainer, for one, tunes the allocator of the process it runs in: chapter 6)."""
    cmd = [sys.executable, __file__, '--one', json.dumps([task, name, list(sizes), device, PRECISION['value']]),
           '--threads', str(_e2e.torch.get_num_threads())]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0: raise RuntimeError(f'{task} row {name!r} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_row(spec: str) -> None:
    "Run the row `spec` names (task, row, sizes, device, precision) here; print its times and quality as a JSON line."
    task, name, (n_train, n_dev, n_test, epochs, lr), device, PRECISION['value'] = json.loads(spec)
    data = (ner_data if task == 'ner' else sentiment_data)(n_train, n_dev, n_test)
    fn, group = ROWS[task][name]
    r = fn(_e2e.minilm_folder(), data, epochs, lr, device, group)
    print(json.dumps({k: r[k] for k in ('total', 'epochs', 'quality')}))


def run_task(task, folder, sizes, rows, rounds, device, tolerance, floor) -> bool:
    n_train, n_dev, n_test, epochs, lr = sizes
    data = (ner_data if task == 'ner' else sentiment_data)(n_train, n_dev, n_test)
    rows = {n: v for n, v in ROWS[task].items() if rows == 'all' or ',' not in n}
    results = {name: [] for name in rows}
    for r in range(rounds):
        names = list(rows)
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(run_row(task, name, sizes, device))
            print(f'  {task} round {r + 1}: {name}: {results[name][-1]["total"]:.1f} s, '
                  f'{"F1" if task == "ner" else "accuracy"} {results[name][-1]["quality"]:.4f}', file=sys.stderr, flush=True)
    med = {n: _e2e.median([x['total'] for x in xs]) for n, xs in results.items()}
    base = 'transformers Trainer'
    metric = 'test F1 (seqeval default)' if task == 'ner' else 'test accuracy'
    print(f'\n## {task}, {PRECISION["value"]} on both sides: {n_train} training examples, {n_dev} dev, {n_test} test, {epochs} epoch(s), batch {BATCH}, '
          f'lr {lr}, {warmup_steps(n_train, epochs)} warm-up steps, median of {rounds} round(s)')
    body = []
    for n, xs in results.items():
        ep = [e for x in xs for e in x['epochs']]
        body.append([n, f'{_e2e.median(ep):.1f}', f'{med[n]:.1f}', f'{med[base] / med[n]:.2f}x',
                     ' / '.join(f'{x["quality"]:.4f}' for x in xs)])
    print(_e2e.table(['implementation', 's / epoch (median)', 'total s', 'speed vs transformers', metric], body))
    lengths = train_lengths(folder, task, data)
    print(padding_line(lengths))
    flops = train_flops(folder, task, data, epochs, lengths)
    print(_e2e.peak_line(_e2e.torch.device(device), {n.split(',')[0].replace('transformers Trainer', 'transformers')
                                                     + (' grouped' if ',' in n else ''): flops / med[n] for n in results}))
    ok = True
    quality = {n: _e2e.median([x['quality'] for x in xs]) for n, xs in results.items()}
    spread = max(quality.values()) - min(quality.values())
    if min(quality.values()) < floor:
        print(f'FAILED: {task}: a side scored {min(quality.values()):.4f} < {floor} (did not learn)'); ok = False
    if spread > tolerance:
        print(f'FAILED: {task}: the {metric} differ by {spread:.4f} > tolerance {tolerance}'); ok = False
    else:
        print(f'quality agrees: {metric} within {spread:.4f} (tolerance {tolerance})')
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='a smoke run: 300 training examples, 1 epoch')
    p.add_argument('--threads', type=int, default=2, help='torch threads (default: %(default)s)')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default: %(default)s)")
    p.add_argument('--tasks', default='ner,sentiment', help='comma-separated: ner, sentiment')
    p.add_argument('--rounds', type=int, default=1, help='runs of every row, the median kept (default: %(default)s)')
    p.add_argument('--train', type=int, default=None, help='training examples (default: per task, fewer with --quick)')
    p.add_argument('--epochs', type=int, default=None, help='epochs (default: per task, 1 with --quick)')
    p.add_argument('--lr', type=float, default=None, help=f'peak learning rate (default {LR}; --quick: per task, higher)')
    p.add_argument('--rows', choices=('all', 'default'), default=None,
                   help="'all', or 'default' to skip the group_by_length rows (default: all; --quick: default)")
    p.add_argument('--precision', choices=('fp32', 'bf16', 'both'), default='fp32',
                   help="both sides' precision: transformers' Trainer(bf16=True) against the book's precision='bf16'; "
                        "'both' runs the fp32 rows, then the bf16 rows (default: %(default)s)")
    p.add_argument('--tolerance', type=float, default=None,
                   help='largest allowed difference of test F1 / accuracy between rows (default 0.08, --quick 0.2)')
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)   # one row, in the subprocess run_row starts
    a = p.parse_args(argv)
    _e2e.setup(a.threads)
    if a.one: one_row(a.one); return 0
    folder = _e2e.minilm_folder()
    tolerance = a.tolerance if a.tolerance is not None else (0.2 if a.quick else 0.08)
    print(f'# fine-tuning all-MiniLM-L6-v2 end to end: bert_book vs transformers\' Trainer; {_e2e.machine_line(_e2e.torch.device(a.device), a.threads)}')
    ok = True
    for task, precision in [(t, pr) for t in a.tasks.split(',')
                            for pr in (('fp32', 'bf16') if a.precision == 'both' else (a.precision,))]:
        if task not in SIZES: p.error(f'unknown task {task!r}; choose from {list(SIZES)}')
        n_train, n_dev, n_test, epochs, lr = SIZES[task][1 if a.quick else 0]
        PRECISION['value'] = precision
        ok &= run_task(task, folder, (a.train or n_train, n_dev, n_test, a.epochs or epochs, a.lr or lr),
                       a.rows or ('default' if a.quick else 'all'), a.rounds, a.device, tolerance, FLOORS[task][a.quick])
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
