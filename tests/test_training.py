"""bert_book.training seen from outside: exact resume, accumulation, early stopping, two-process DDP on CPU."""
import json, os, subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch

from bert_book.core import BertConfig, seed_everything
from bert_book.heads import BertForTokenClassification
from bert_book.training import Trainer, TrainingConfig, batch_schedule, lr_lambda
from tiny import tiny_config

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=32, num_labels=4)


def toy(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{'input_ids': x, 'labels': x % 4} for x in torch.randint(1, 100, (n, 10), generator=g)]


def stack(examples):
    return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def max_gap(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_resume_is_exact(tmp_path):
    data, valid = toy(200), [stack(toy(64, seed=1))]
    def make(seed, out):
        seed_everything(seed)
        model = BertForTokenClassification(BertConfig(**TINY))
        cfg = TrainingConfig(max_steps=16, batch_size=16, lr=3e-3, eval_every=4, save_every=8, output_dir=str(out),
                             progress=False, device='cpu')
        return model, Trainer(model, cfg, data, stack, eval_batches=valid)
    a, ta = make(0, tmp_path / 'a'); ta.fit()
    b, tb = make(1, tmp_path / 'b'); tb.fit(resume_from=tmp_path / 'a' / 'checkpoint-8')
    assert max_gap(weights(a), weights(b)) == 0.0
    assert ta.history.eval == tb.history.eval


def test_accumulation_matches_a_bigger_batch():
    cfg = BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    def run(bs, accum):
        seed_everything(0)
        model = BertForTokenClassification(cfg)
        Trainer(model, TrainingConfig(max_steps=5, batch_size=bs, grad_accum_steps=accum, lr=3e-3, progress=False,
                                      device='cpu'), toy(160), stack).fit()
        return weights(model)
    assert max_gap(run(32, 1), run(8, 4)) < 1e-5


def test_early_stopping_stops():
    seed_everything(0)
    model = BertForTokenClassification(BertConfig(**TINY))
    cfg = TrainingConfig(max_steps=300, batch_size=16, lr=1.0, warmup_steps=0, eval_every=3, early_stopping_patience=2,
                         progress=False, device='cpu')
    trainer = Trainer(model, cfg, toy(160), stack, eval_batches=[stack(toy(32, seed=3))])
    history = trainer.fit()
    assert trainer.step < 300
    assert [r['step'] for r in history.eval][-3] == history.best_step


def test_an_evaluation_batch_without_labels_adds_nothing():
    "A batch whose labels are all -100 (an MLM batch where nothing was masked) neither adds to the loss nor makes it NaN."
    from bert_book.training import evaluate_batches
    seed_everything(0)
    model = BertForTokenClassification(BertConfig(**TINY)).eval()
    good, other = stack(toy(8, seed=1)), stack(toy(4, seed=2))
    empty = {**stack(toy(4, seed=3)), 'labels': torch.full((4, 10), -100)}
    both, with_empty = evaluate_batches(model, [good, other]), evaluate_batches(model, [good, empty, other])
    assert with_empty['n_targets'] == both['n_targets'] == 120
    assert with_empty['loss'] == pytest.approx(both['loss'], rel=1e-12) and with_empty['accuracy'] == both['accuracy']


def test_the_best_evaluation_is_found_with_an_unlabelled_evaluation_batch():
    "metric_for_best='loss' compares numbers, not NaNs: a later, better evaluation is the best one."
    seed_everything(0)
    model = BertForTokenClassification(BertConfig(**TINY))
    valid = [stack(toy(16, seed=1)), {**stack(toy(4, seed=2)), 'labels': torch.full((4, 10), -100)}]
    cfg = TrainingConfig(max_steps=4, batch_size=16, lr=3e-3, warmup_steps=0, eval_every=1, progress=False, device='cpu')
    history = Trainer(model, cfg, toy(64), stack, eval_batches=valid).fit()
    losses = [r['loss'] for r in history.eval]
    assert all(l == l for l in losses), losses                         # no NaN
    assert history.best_step == history.eval[losses.index(min(losses))]['step'] > history.eval[0]['step'], losses


def test_schedule_and_batches():
    assert lr_lambda(0, 100, 10) == pytest.approx(0.1) and lr_lambda(10, 100, 10) == 1.0 and lr_lambda(99, 100, 10) > 0
    b = batch_schedule(103, 10, epoch=2, seed=5)
    assert sorted(i for x in b for i in x) == list(range(103)) and b == batch_schedule(103, 10, epoch=2, seed=5)


def test_bad_arguments():
    with pytest.raises(ValueError, match='grad_accum_steps must be >= 1'):
        TrainingConfig(grad_accum_steps=0)
    with pytest.raises(ValueError, match='train_data is empty'):
        Trainer(BertForTokenClassification(BertConfig(**TINY)), TrainingConfig(progress=False, device='cpu'), [], stack)
    with pytest.raises(ValueError, match='group_by_length=True needs `lengths`'):
        Trainer(BertForTokenClassification(BertConfig(**TINY)),
                TrainingConfig(group_by_length=True, progress=False, device='cpu'), toy(10), stack)


def test_a_nan_loss_stops_before_the_weights_change():
    "A micro-batch with nothing labelled (NaN loss) stops the run with the step named; the weights stay as they were."
    seed_everything(0)
    model = BertForTokenClassification(BertConfig(**TINY))
    data = toy(64)
    data[40]['labels'] = torch.full_like(data[40]['labels'], -100)      # the second step's example below
    cfg = TrainingConfig(max_steps=4, batch_size=1, shuffle=False, progress=False, device='cpu', lr=1e-3)
    trainer = Trainer(model, cfg, data[39:43], stack)
    with pytest.raises(FloatingPointError, match='non-finite training loss at step 2') as e: trainer.fit()
    assert 'the weights are those after step 1' in str(e.value)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    loss_fn = lambda logits, labels: logits.sum() * float('nan')          # a user's loss that breaks
    with pytest.raises(FloatingPointError, match='step 1'):
        Trainer(BertForTokenClassification(BertConfig(**TINY)), cfg, data, stack, loss_fn=loss_fn).fit()


# --- issue 17: resume for every model, the same result with accumulation or more processes ---------------------------

from bert_book.heads import BertForMaskedLM, BertForSequenceClassification, cross_entropy
from bert_book.masking import MLMCollator
from bert_book.training import _autocast_dtype


def test_mlm_resume_is_bit_exact(tmp_path):
    "A masked language model (tied decoder) resumes bit-exactly, mid-epoch and at an epoch boundary, with accumulation 3."
    g = torch.Generator().manual_seed(0)
    data = [x for x in torch.randint(5, 100, (60, 12), generator=g)]   # 60 examples / (4 × 3) = 5 steps an epoch
    def make(seed, out):
        seed_everything(seed)
        model = BertForMaskedLM(BertConfig(**TINY))
        cfg = TrainingConfig(max_steps=8, batch_size=4, grad_accum_steps=3, lr=3e-3, save_every=1, output_dir=str(out),
                             progress=False, device='cpu', log_every=1)
        collate = MLMCollator(pad_token_id=0, mask_token_id=4, vocab_size=100, special_token_ids=[1, 2, 3], seed=5)
        return model, Trainer(model, cfg, data, collate, forward_kwargs={'masked_only': True})
    a, ta = make(0, tmp_path / 'a'); ta.fit()
    assert ta.steps_per_epoch == 5
    for at in (3, 5):   # mid-epoch, epoch boundary
        b, tb = make(1, tmp_path / f'b{at}'); tb.fit(resume_from=tmp_path / 'a' / f'checkpoint-{at}')
        assert max_gap(weights(a), weights(b)) == 0.0
        assert tb.history.train == ta.history.train


def test_load_best_from_disk_for_mlm(tmp_path):
    "After a resume the best weights come back from output_dir/best: that load must accept the tied decoder too."
    data = [x for x in torch.randint(5, 100, (16, 12), generator=torch.Generator().manual_seed(0))]
    collate = MLMCollator(pad_token_id=0, mask_token_id=4, vocab_size=100, special_token_ids=[1, 2, 3], seed=5)
    seed_everything(0)
    cfg = TrainingConfig(max_steps=2, batch_size=8, lr=3e-3, output_dir=str(tmp_path), progress=False, device='cpu')
    t = Trainer(BertForMaskedLM(BertConfig(**TINY)), cfg, data, collate, eval_batches=[collate.with_seed(1)(data[:8])])
    t.fit()
    t.best_state = None
    t._load_best()   # from disk


def unequal(n=64):
    "Blocks of 8 examples: all 10 positions labelled, then 1 labelled — micro-batches with very different label counts."
    g = torch.Generator().manual_seed(0)
    out = []
    for i, x in enumerate(torch.randint(1, 100, (n, 10), generator=g)):
        labels = x % 4
        if (i // 8) % 2: labels = torch.where(torch.arange(10) == 3, labels, -100)
        out.append({'input_ids': x, 'labels': labels})
    return out


def test_accumulation_is_token_weighted():
    "1 × 16 = 2 × 8 = 4 × 4 when micro-batches hold 80 and 8 labelled positions: the loss is a mean over tokens of the step."
    cfg = BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    def run(bs, accum, loss_fn=None):
        seed_everything(0)
        model = BertForTokenClassification(cfg)
        t = Trainer(model, TrainingConfig(max_steps=3, batch_size=bs, grad_accum_steps=accum, lr=3e-3, shuffle=False,
                                          progress=False, device='cpu', log_every=1), unequal(), stack, loss_fn=loss_fn)
        t.fit()
        return weights(model), t.history.train
    (w1, h1), (w2, h2), (w4, _) = run(16, 1), run(8, 2), run(4, 4)
    assert max_gap(w1, w2) < 1e-6 and max_gap(w1, w4) < 1e-6
    assert abs(h1[0]['loss'] - h2[0]['loss']) < 1e-6       # the logged loss is the same token mean
    # a loss_fn returns a mean over the labelled positions: it is weighted by the micro-batch's labelled count
    mean_fn = lambda logits, labels: cross_entropy(logits, labels)
    assert max_gap(w1, run(8, 2, mean_fn)[0]) < 1e-6 and max_gap(w1, run(4, 4, mean_fn)[0]) < 1e-6


def test_sequence_classification_accumulation():
    "One label per example: weighting by labelled count is weighting by examples, so a short last micro-batch counts less."
    cfg = BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    g = torch.Generator().manual_seed(0)
    data = [{'input_ids': x, 'labels': x[0] % 4} for x in torch.randint(1, 100, (20, 10), generator=g)]
    def run(bs, accum, loss_fn=None):
        seed_everything(0)
        model = BertForSequenceClassification(cfg)
        Trainer(model, TrainingConfig(max_steps=1, batch_size=bs, grad_accum_steps=accum, lr=3e-3, shuffle=False,
                                      progress=False, device='cpu'), data, stack, loss_fn=loss_fn).fit()
        return weights(model)
    w = run(20, 1)
    assert max_gap(w, run(8, 3)) < 1e-6                      # micro-batches of 8, 8 and 4 examples
    assert max_gap(w, run(8, 3, lambda logits, labels: cross_entropy(logits, labels))) < 1e-6


def test_logged_lr_is_the_lr_of_the_step():
    seed_everything(0)
    cfg = TrainingConfig(max_steps=6, batch_size=8, lr=1e-3, warmup_steps=2, log_every=1, progress=False, device='cpu')
    t = Trainer(BertForTokenClassification(BertConfig(**TINY)), cfg, toy(48), stack)
    lrs = [r['lr'] for r in t.fit().train]
    assert lrs == pytest.approx([1e-3 * lr_lambda(s, 6, 2) for s in range(6)])
    assert lrs[-1] > 0


def test_auto_precision_ignores_bf16_emulation(monkeypatch):
    "A pre-Ampere GPU 'supports' bf16 only through emulation: 'auto' and 'default' must choose fp32 there."
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: including_emulation)
    for precision in ('auto', 'default'):
        assert _autocast_dtype(precision, torch.device('cuda')) is None
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: True)
    for precision in ('auto', 'default'):
        assert _autocast_dtype(precision, torch.device('cuda')) == torch.bfloat16


DDP_ISSUE17 = textwrap.dedent('''
    import json, sys, torch
    torch.set_num_threads(1)
    from bert_book.core import BertConfig, seed_everything
    from bert_book.heads import BertForTokenClassification, cross_entropy
    from bert_book.masking import MLMCollator
    from bert_book.training import Trainer, TrainingConfig
    mode, out = sys.argv[1], sys.argv[2]
    stack = lambda ex: {k: torch.stack([e[k] for e in ex]) for k in ex[0]}
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=32, num_labels=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    g = torch.Generator().manual_seed(0)
    data = []
    for i, x in enumerate(torch.randint(1, 100, (64, 10), generator=g)):
        labels = x % 4
        if (i // 8) % 2: labels = torch.where(torch.arange(10) == 3, labels, -100)
        data.append({'input_ids': x, 'labels': labels})
    def weights_run(bs, accum):
        seed_everything(0)
        model = BertForTokenClassification(config)
        t = Trainer(model, TrainingConfig(max_steps=3, batch_size=bs, grad_accum_steps=accum, lr=3e-3, shuffle=False,
                                          progress=False, device='cpu', log_every=1), data, stack)
        t.fit()
        return t, model
    def epoch_run(bs, accum):
        "A whole epoch of 200 examples (the last batch short) with gradient accumulation and an evaluation."
        g = torch.Generator().manual_seed(0)
        examples = [{'input_ids': x, 'labels': x % 4} for x in torch.randint(1, 100, (200, 10), generator=g)]
        seed_everything(0)
        model = BertForTokenClassification(config)
        t = Trainer(model, TrainingConfig(num_epochs=1, batch_size=bs, grad_accum_steps=accum, lr=3e-3, progress=False,
                                          device='cpu'), examples, stack, eval_batches=[stack(examples[:32])])
        return t, model, t.fit().eval[-1]['loss']
    def dropout_run():
        "Two steps with dropout on identical examples: the embedding dropout's masks of each step, and the weights."
        seed_everything(0)
        dropped = BertForTokenClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, max_position_embeddings=32, num_labels=4, hidden_dropout_prob=0.5))
        masks = []
        def record(module, args, output):
            if module.training: masks.append(output == 0)
        dropped.bert.embeddings.dropout.register_forward_hook(record)
        same = [{'input_ids': torch.arange(5, 17), 'labels': torch.arange(12) % 4}] * 16
        Trainer(dropped, TrainingConfig(max_steps=2, batch_size=4, lr=1e-3, progress=False, device='cpu'), same,
                stack).fit()
        return torch.stack(masks), dropped.state_dict()
    res = {}
    if mode == 'single':
        for bs, accum in ((16, 1), (4, 4)):
            t, model = weights_run(bs, accum)
            torch.save(model.state_dict(), f'{out}/w_{bs}x{accum}.pt')
        t, model, loss = epoch_run(16, 2)
        torch.save(model.state_dict(), f'{out}/w_epoch_1proc.pt')
        with open(f'{out}/epoch_1proc.json', 'w') as f: json.dump({'eval_loss': loss}, f)
        masks, _ = dropout_run()
        torch.save(masks, f'{out}/dropout_1proc.pt')
        sys.exit(0)
    # 1. 2 processes x 8: the weights of 1 x 16
    t, model = weights_run(8, 1)
    rank = t.rank
    if rank == 0: torch.save(model.state_dict(), f'{out}/w_2procs.pt')
    # 1b. a whole epoch with a short last batch, accumulation and an evaluation: 2 processes x 8 = 1 x 16
    t, model, res['epoch_eval_loss'] = epoch_run(8, 2)
    if rank == 0: torch.save(model.state_dict(), f'{out}/w_epoch_2procs.pt')
    # 2. every rank masks its own positions: identical examples, identical batches
    seen = []
    class Recording(MLMCollator):
        def __call__(self, ex):
            b = super().__call__(ex); seen.append(b['labels'].clone()); return b
    same = [torch.arange(5, 17)] * 16
    seed_everything(0)
    mlm = BertForTokenClassification(config)   # any model: only the collator matters here
    collate = Recording(pad_token_id=0, mask_token_id=4, vocab_size=100, special_token_ids=[1, 2, 3], seed=0)
    t = Trainer(mlm, TrainingConfig(max_steps=2, batch_size=4, lr=1e-3, progress=False, device='cpu',
                                    output_dir=f'{out}/mlm'), same, collate,
                loss_fn=lambda logits, labels: logits.float().mean() * 0 + (labels != -100).float().mean())
    t.fit()
    torch.save(torch.stack(seen), f'{out}/labels_{rank}.pt')
    state = torch.load(f'{out}/mlm/last/trainer_state.pt', weights_only=True)
    res['collate_states_saved'] = len(state.get('collate_rng_ranks') or [])
    mine_saved = (state.get('collate_rng_ranks') or [None, None])[rank]
    res['own_state_saved'] = mine_saved is not None and bool(torch.equal(mine_saved, collate.generator.get_state()))
    collate2 = Recording(pad_token_id=0, mask_token_id=4, vocab_size=100, special_token_ids=[1, 2, 3], seed=0)
    t2 = Trainer(mlm, TrainingConfig(max_steps=2, batch_size=4, lr=1e-3, progress=False, device='cpu'), same, collate2,
                 loss_fn=lambda logits, labels: logits.float().mean() * 0)
    t2.load_checkpoint(f'{out}/mlm/last')
    res['own_state_restored'] = bool(torch.equal(collate2.generator.get_state(), collate.generator.get_state()))
    mine_saved = (state.get('rng_ranks') or [None, None])[rank]
    res['own_rng_restored'] = mine_saved is not None and bool(torch.equal(torch.get_rng_state(), mine_saved['cpu']))
    # 3. steps per epoch count what runs: 9 examples, global batch 8 -> [8], [1]; the 1 is dropped under 2 processes
    seed_everything(0)
    t = Trainer(BertForTokenClassification(config), TrainingConfig(num_epochs=2, batch_size=4, lr=1e-3, progress=False,
                                                                    device='cpu'), data[:9], stack)
    res['steps_per_epoch'] = t.steps_per_epoch
    t.fit()
    res['steps_run'], res['epochs_run'] = t.step, t.epoch
    # 4. fewer examples than processes: a clear error, not a run that never ends
    try:
        Trainer(BertForTokenClassification(config), TrainingConfig(batch_size=4, progress=False, device='cpu'), data[:1], stack)
        res['too_small'] = 'no error'
    except ValueError as e: res['too_small'] = str(e)
    with open(f'{out}/res_{rank}.json', 'w') as f: json.dump(res, f)
    # 5. a non-finite loss on rank 1 only, at step 2: every rank stops, naming the step
    calls = [0]
    def breaks_on_rank1(logits, labels):
        calls[0] += 1
        loss = cross_entropy(logits, labels)
        return loss * float('nan') if rank == 1 and calls[0] == 2 else loss
    seed_everything(0)
    t = Trainer(BertForTokenClassification(config), TrainingConfig(max_steps=4, batch_size=4, lr=1e-3, progress=False,
                                                                    device='cpu'), data, stack, loss_fn=breaks_on_rank1)
    try: t.fit(); msg = 'no error'
    except FloatingPointError as e: msg = str(e)
    res['nan'] = msg
    res['finite_weights'] = all(bool(torch.isfinite(p).all()) for p in t.model.parameters())
    # 6. dropout: each rank draws its own masks for the same-shaped batch; the weights stay the same on every rank
    masks, weights = dropout_run()
    torch.save(masks, f'{out}/dropout_{rank}.pt')
    torch.save(weights, f'{out}/w_dropout_{rank}.pt')
    with open(f'{out}/res_{rank}.json', 'w') as f: json.dump(res, f)
''')


def test_ddp(tmp_path, monkeypatch):
    """Two gloo processes (one torchrun launch): 2 × B/2 = 1 × B = k × B/k with unequal label counts; a whole epoch
    with a short last batch, accumulation and the same evaluation loss; per-rank masks; step counts; a NaN stops every rank."""
    import runpy
    script = tmp_path / 'ddp.py'
    script.write_text(DDP_ISSUE17)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    monkeypatch.setattr(sys, 'argv', [str(script), 'single', str(tmp_path)])   # the one-process runs: here, no new interpreter
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as done: runpy.run_path(str(script), run_name='__main__')
    finally: torch.set_num_threads(threads)
    assert done.value.code == 0
    torchrun = Path(sys.executable).with_name('torchrun')
    try:
        two = subprocess.run([str(torchrun), '--nproc_per_node', '2', '--master_port', '29533', str(script), 'ddp',
                              str(tmp_path)], env=env, capture_output=True, text=True, timeout=400)
        err = two.stderr[-3000:]
    except subprocess.TimeoutExpired as e: err = f'timed out: {e}'
    w = {n: torch.load(tmp_path / f'w_{n}.pt', weights_only=True) for n in ('16x1', '4x4', '2procs')
         if (tmp_path / f'w_{n}.pt').exists()}
    assert max_gap(w['16x1'], w['4x4']) < 1e-6
    assert '2procs' in w, err
    assert max_gap(w['16x1'], w['2procs']) < 1e-6
    epoch = {n: torch.load(tmp_path / f'w_epoch_{n}.pt', weights_only=True) for n in ('1proc', '2procs')}
    assert max_gap(epoch['1proc'], epoch['2procs']) < 1e-5
    one_loss = json.loads((tmp_path / 'epoch_1proc.json').read_text())['eval_loss']
    l0, l1 = (torch.load(tmp_path / f'labels_{r}.pt', weights_only=True) for r in (0, 1))
    assert l0.shape == l1.shape and not torch.equal(l0, l1)        # the two ranks masked different positions
    res = [json.loads((tmp_path / f'res_{r}.json').read_text()) for r in (0, 1)]
    for r in res:
        assert r['collate_states_saved'] == 2 and r['own_state_saved'] and r['own_state_restored']
        assert r['steps_per_epoch'] == 1 and r['steps_run'] == 2 and r['epochs_run'] == 2
        assert 'fewer examples' in r['too_small'], r['too_small']
        assert abs(r['epoch_eval_loss'] - one_loss) < 1e-4            # the same evaluation loss, to 4 decimals
    for r in res:
        assert 'nan' in r, err
        assert 'non-finite training loss at step 2' in r['nan'] and r['finite_weights'], r['nan']
    d1, d0, d2 = (torch.load(tmp_path / f'dropout_{n}.pt', weights_only=True) for n in ('1proc', 0, 1))
    assert d0.shape == d2.shape == d1.shape and 0.3 < d0.float().mean() < 0.7
    assert not torch.equal(d0, d2)                                  # the two ranks dropped different units
    assert torch.equal(d0, d1)                                      # rank 0 draws what one process draws
    w0, w2 = (torch.load(tmp_path / f'w_dropout_{r}.pt', weights_only=True) for r in (0, 1))
    assert max_gap(w0, w2) == 0.0                                   # and the weights stay in sync
    for r in res: assert r['own_rng_restored']                      # each rank resumes its own dropout stream


# ---- what every trainer takes and returns ---------------------------------------------------------------------------
def test_trained_is_a_named_tuple():
    from bert_book.training import History, Trained
    model, history = Trained(torch.nn.Linear(2, 2), History(best_step=4))
    assert Trained._fields == ('model', 'history') and history.best_step == 4 and isinstance(model, torch.nn.Linear)


@pytest.mark.parametrize('name', ['train_ner', 'train_classifier', 'pretrain_mlm', 'distill'])
def test_every_trainer_has_one_shape(name):
    "Data first (the only positional arguments), then tokenizer=, encoder=, training= as keywords; a Trained back."
    import inspect
    import bert_book.compression, bert_book.classification, bert_book.mlm, bert_book.token_classification
    fn = {'train_ner': bert_book.token_classification.train_ner, 'train_classifier': bert_book.classification.train_classifier,
          'pretrain_mlm': bert_book.mlm.pretrain_mlm, 'distill': bert_book.compression.distill}[name]
    params = inspect.signature(fn).parameters
    positional = [p for p, v in params.items() if v.kind == v.POSITIONAL_OR_KEYWORD]
    keywords = {p: v.default for p, v in params.items() if v.kind == v.KEYWORD_ONLY}
    assert inspect.signature(fn).return_annotation == 'Trained'
    assert keywords['training'] is None
    if name == 'distill':          # two models and encoded data: a shape of its own (see its docstring)
        assert positional == ['teacher', 'student', 'train_set', 'collate'] and 'eval_fn' in keywords
        return
    assert positional == ['train', 'dev']
    assert keywords['tokenizer'] is None
    if name != 'pretrain_mlm': assert keywords['encoder'] is None


def test_start_from_reads_a_folder_with_the_registered_loader(tmp_path):
    import bert_book                                   # the checkpoint chapter registers its loader
    from bert_book.encoder import BertModel
    from bert_book.pretrained import save_pretrained
    from bert_book.tokenizer import train_wordpiece
    from bert_book.training import start_from
    tok = train_wordpiece(['a tiny corpus of words', 'and some more words'] * 5, vocab_size=60)
    cfg = tiny_config(tok.vocab_size, hidden_size=16, intermediate_size=32, max_position_embeddings=16, labels=('O', 'B-X'))
    seed_everything(0)
    tagger = BertForTokenClassification(cfg)
    folder = save_pretrained(tagger, tok, tmp_path / 'tagger')
    encoder, folder_tok = start_from(folder, None, 'some_trainer')
    assert type(encoder) is BertModel and folder_tok.get_vocab() == tok.get_vocab()
    assert all(torch.equal(v, tagger.bert.state_dict()[k]) for k, v in encoder.state_dict().items())
    mine = object()
    assert start_from(str(folder), mine, 'some_trainer')[1] is mine     # a given tokenizer wins
    module = torch.nn.Linear(2, 2)
    assert start_from(module, mine, 'some_trainer') == (module, mine)
    with pytest.raises(TypeError, match='some_trainer needs a tokenizer: pass tokenizer='): start_from(module, None, 'some_trainer')
    with pytest.raises(FileNotFoundError, match='is not a folder'): start_from(tmp_path / 'nothing', mine, 'some_trainer')
