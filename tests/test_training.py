"""bert_book.training seen from outside: exact resume, accumulation, early stopping, two-process DDP on CPU."""
import os, subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch

from bert_book.core import BertConfig, seed_everything
from bert_book.heads import BertForTokenClassification
from bert_book.training import Trainer, TrainingConfig, batch_schedule, lr_lambda

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


DDP_SCRIPT = textwrap.dedent('''
    import sys, torch
    from bert_book.core import BertConfig, seed_everything
    from bert_book.heads import BertForTokenClassification
    from bert_book.training import Trainer, TrainingConfig
    batch_size, accum, target = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    g = torch.Generator().manual_seed(0)
    data = [{'input_ids': x, 'labels': x % 4} for x in torch.randint(1, 100, (200, 10), generator=g)]
    stack = lambda ex: {k: torch.stack([e[k] for e in ex]) for k in ex[0]}
    seed_everything(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=32, num_labels=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForTokenClassification(config)
    cfg = TrainingConfig(num_epochs=1, batch_size=batch_size, grad_accum_steps=accum, lr=3e-3, progress=False, device='cpu')
    trainer = Trainer(model, cfg, data, stack, eval_batches=[stack(data[:32])])
    history = trainer.fit()
    if trainer.rank == 0:
        torch.save(model.state_dict(), target)
        print('eval', history.eval[-1]['loss'])
''')


def test_two_process_ddp_matches_one_process(tmp_path):
    "torchrun with 2 CPU processes (gloo) × batch 8 reaches the weights of 1 process × batch 16 (200 examples: a short last batch too)."
    script = tmp_path / 'ddp.py'
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    one = subprocess.run([sys.executable, str(script), '16', '2', str(tmp_path / 'one.pt')], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    torchrun = Path(sys.executable).with_name('torchrun')
    two = subprocess.run([str(torchrun), '--nproc_per_node', '2', '--master_port', '29531', str(script), '8', '2',
                          str(tmp_path / 'two.pt')], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    w1, w2 = (torch.load(tmp_path / f, weights_only=True) for f in ('one.pt', 'two.pt'))
    assert max_gap(w1, w2) < 1e-5
    assert one.stdout.split()[-1][:6] == two.stdout.split()[-1][:6]   # the same evaluation loss, to 4 decimals


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
