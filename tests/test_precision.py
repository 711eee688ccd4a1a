"""Serving in bfloat16, seen from outside: `dtype=` on the engine and the CLI, agreement with float32, bad input, the
guard's precision, and training's `precision='auto'` (bf16 where the CPU has it) and `'default'` (fp32 on the CPU)."""
import json, shutil

import pytest
import torch

import bert_book as bb
from bert_book.cli import run_here
from bert_book.datasets import LabelledText
from bert_book.engine import Engine, serving_dtype
from bert_book.ood import fit_guard
from bert_book.service import engine_info
from bert_book.tokenizer import BertTokenizer
from bert_book.training import TrainingConfig, _autocast_dtype, cpu_has_bf16

TEXTS = ['Angela Merkel met Emmanuel Macron in Paris.', 'the cat sat on the mat', 'a b c d e f g h i j',
         'Rain fell on the long grey streets of the old town for the whole of the afternoon.']


def labels(engine, method):
    if method == 'classify': return [a['label'] for a in engine.classify(TEXTS)]
    return [e['probs'].argmax(-1).tolist() for e in engine.encode(TEXTS, return_probs=True)]


@pytest.mark.parametrize('task,method', [('tagger', 'encode'), ('classifier', 'classify')])
def test_bfloat16_engine_agrees_with_float32(tiny_folders, task, method):
    f32 = bb.load(tiny_folders[task], device='cpu')
    b16 = bb.load(tiny_folders[task], device='cpu', dtype='bfloat16')
    assert (f32.precision, b16.precision) == ('float32', 'bfloat16')
    assert next(b16.model.parameters()).dtype == torch.bfloat16
    assert engine_info(b16)['precision'] == 'bfloat16'
    got, want = labels(b16, method), labels(f32, method)
    same = sum(a == b for g, w in zip(got, want) for a, b in zip(g if isinstance(g, list) else [g], w if isinstance(w, list) else [w]))
    total = sum(len(w) if isinstance(w, list) else 1 for w in want)
    assert same / total >= 0.9, (got, want)      # random tiny weights: near-ties may flip; trained models: chapter 14d


def test_fill_mask_in_bfloat16(tiny_folders):
    out = bb.load(tiny_folders['mlm'], device='cpu', dtype='bfloat16').fill_mask('the [MASK] sat', top_k=3)
    assert len(out) == 1 and len(out[0]) == 3 and all(0 <= c['score'] <= 1 for c in out[0])


def test_auto_picks_bfloat16_only_with_the_instructions(tiny_folders):
    want = 'bfloat16' if cpu_has_bf16() else 'float32'
    assert serving_dtype('auto', 'cpu') == want
    assert bb.load(tiny_folders['tagger'], device='cpu', dtype='auto').precision == want
    assert _autocast_dtype('auto', torch.device('cpu')) == (torch.bfloat16 if cpu_has_bf16() else None)  # training too
    assert _autocast_dtype('default', torch.device('cpu')) is None       # the default: fp32 on every CPU


@pytest.mark.parametrize('has_bf16', [True, False])
def test_training_auto_follows_the_cpu_and_says_what_it_picked(has_bf16, monkeypatch, caplog):
    import logging
    import bert_book.training as training
    from bert_book.core import BertConfig
    from bert_book.heads import BertForTokenClassification
    monkeypatch.setattr(training, 'cpu_has_bf16', lambda: has_bf16)
    model = BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=32, num_labels=3))
    data = [{'input_ids': torch.tensor([2, 7, 3]), 'labels': torch.tensor([-100, 1, -100])}] * 4
    stack = lambda ex: {k: torch.stack([e[k] for e in ex]) for k in ex[0]}
    with caplog.at_level(logging.INFO, logger='bert_book.training'):
        trainer = training.Trainer(model, TrainingConfig(max_steps=1, batch_size=2, precision='auto', progress=False,
                                                         device='cpu'), data, stack)
    assert trainer.amp_dtype == (torch.bfloat16 if has_bf16 else None)
    assert f"precision='auto' on cpu: {'bf16' if has_bf16 else 'fp32'}" in caplog.text
    default = training.Trainer(model, TrainingConfig(max_steps=1, batch_size=2, progress=False, device='cpu'), data, stack)
    assert TrainingConfig().precision == 'default' and default.amp_dtype is None
    trainer.fit()
    with pytest.raises(ValueError, match=r"precision='fast'; choose one of \('default', 'auto'"):
        TrainingConfig(precision='fast')


@pytest.mark.parametrize('dtype', ['float8', 'fp16', 'bf16x'])
def test_unknown_dtype_is_a_clear_error(tiny_folders, dtype):
    with pytest.raises(ValueError, match=f"dtype='{dtype}'; choose one of"): bb.load(tiny_folders['tagger'], dtype=dtype)


def test_int8_with_bfloat16_is_refused(tiny_folders):
    with pytest.raises(ValueError, match="quantize='int8'.*dtype='bfloat16'"):
        bb.load(tiny_folders['classifier'], quantize='int8', dtype='bfloat16')


REVIEWS = [LabelledText(t, l) for t, l in [('A triumph.', 'positive'), ('Dull, dull, dull.', 'negative'),
           ('Warm and wise.', 'positive'), ('A mess.', 'negative'), ('Lovely cast.', 'positive'),
           ('No sense at all.', 'negative'), ('Best of the year.', 'positive'), ('Not funny.', 'negative')]]


def test_a_float32_guard_refuses_a_bfloat16_engine(tiny_folders, tmp_path):
    folder = shutil.copytree(tiny_folders['classifier'], tmp_path / 'classifier')
    model = bb.load_model(folder, device='cpu')
    fit_guard(model, BertTokenizer.from_pretrained(folder), REVIEWS, REVIEWS[::2]).save(folder)
    with pytest.raises(ValueError, match='fitted on the float32 model; this engine runs in bfloat16.*dtype'):
        Engine.from_folder(folder, device='cpu', dtype='bfloat16')
    engine = Engine.from_folder(folder, device='cpu', dtype='auto')   # 'auto' serves the guard's precision
    assert engine.precision == 'float32' and 'in_distribution' in engine.classify('A triumph.')


def test_cli_predict_dtype(tiny_folders):
    rc, out, err = run_here('predict', str(tiny_folders['classifier']), 'A triumph.', '--dtype', 'bfloat16', '--device', 'cpu')
    assert rc == 0, err
    assert json.loads(out.splitlines()[0])['label'] in ('negative', 'positive')
    rc, _, err = run_here('predict', str(tiny_folders['classifier']), 'x', '--dtype', 'float8')
    assert rc == 2 and 'float8' in err


def test_training_precision_choices():
    with pytest.raises(ValueError, match="precision='int4'"): TrainingConfig(precision='int4')
    assert _autocast_dtype('bf16', torch.device('cpu')) == torch.bfloat16
    assert _autocast_dtype('fp32', torch.device('cpu')) is None


def test_cli_train_precision(tmp_path):
    from importlib.resources import files
    sample = files('bert_book') / 'sample_data'
    args = ['train-ner', '--train', sample / 'ner_train.conll', '--dev', sample / 'ner_dev.conll', '--size', 'tiny',
            '--max-steps', '2', '--no-progress', '--output-dir']
    rc, out, err = run_here(*args, tmp_path / 'bf16', '--precision', 'bf16')
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])['steps'] == 2
    rc, _, err = run_here(*args, tmp_path / 'fp8', '--precision', 'fp8')
    assert rc == 2 and "invalid choice: 'fp8'" in err
