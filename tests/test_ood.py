"""bert_book.ood seen from outside: the OOD metrics equal scikit-learn's (ties included), calibration and temperature on
known cases, the shifted-text readers on a user's files and on broken ones, and the guard: saved beside a model, bound
to its weights, loaded by the engine, applied by `POST /v1/classify` and reported by `/v1/model`, fitted by
`bert-book fit-guard`; every way a guard file can be wrong gets an error that says what."""
import bz2, csv, importlib, json, os, shutil, subprocess, sys

import numpy as np
import pytest
import sklearn.metrics as sklearn_metrics
import torch

from bert_book.ood import (GUARD_FILE, Mahalanobis, OODGuard, accept_threshold, aupr, auroc, bbc_news, calibration_bins,
                           energy_score, expected_calibration_error, first_sentence, fit_guard, fit_temperature,
                           fpr_at_tpr, guardian_headlines, max_logit_score, msp_score, ood_metrics, text_outputs)
from bert_book.datasets import LabelledText
from bert_book.pretrained import from_pretrained, save_pretrained
from bert_book.engine import Engine
from bert_book.service import create_app, BackgroundServer, Limits
from bert_book.tokenizer import BertTokenizer
import tiny

httpx = importlib.import_module('httpx')
ENV = {**os.environ, 'BERT_BOOK_DEVICE': 'cpu', 'OMP_NUM_THREADS': '1'}

REVIEWS = [LabelledText(t, l) for t, l in [
    ('A triumph of sound and light.', 'positive'), ('Two hours I will not get back.', 'negative'),
    ('Warm, funny and wise.', 'positive'), ('Dull, dull, dull.', 'negative'), ('The cast is lovely.', 'positive'),
    ('A mess from start to finish.', 'negative'), ('I laughed all the way through.', 'positive'),
    ('Not funny, and not short either.', 'negative'), ('Beautifully shot and acted.', 'positive'),
    ('The plot makes no sense.', 'negative'), ('One of the best films of the year.', 'positive'),
    ('Tedious and far too long.', 'negative')]]


# ---- metrics against scikit-learn -----------------------------------------------------------------------------------
@pytest.mark.parametrize('seed', range(25))
def test_metrics_equal_sklearn(seed):
    g = np.random.default_rng(seed)
    n, m = g.integers(1, 60, size=2)
    a = g.integers(0, 8, n).astype(float)                      # few distinct values: many ties, inside and across sets
    b = g.integers(0, 8, m).astype(float) + g.choice([0.0, 0.5, 1.0])
    y = np.r_[np.zeros(n), np.ones(m)]                         # OOD positive
    s = np.r_[a, b]
    assert auroc(a, b) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    assert aupr(a, b) == pytest.approx(sklearn_metrics.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, _ = sklearn_metrics.roc_curve(1 - y, -s, drop_intermediate=False)   # in-distribution positive for FPR95
    assert fpr_at_tpr(a, b) == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
    assert set(ood_metrics(a, b)) == {'auroc', 'aupr', 'fpr95'}


def test_metric_edges():
    assert auroc([0, 1], [2, 3]) == 1.0 and auroc([2, 3], [0, 1]) == 0.0 and auroc([1, 1], [1]) == 0.5
    assert accept_threshold([3, 1, 2, 4], 0.5) == 2 and accept_threshold([5], 0.95) == 5
    for bad, message in [(lambda: auroc([], [1]), 'both sets need scores'), (lambda: auroc([float('nan')], [1]), 'finite'),
                         (lambda: accept_threshold([1], 0), 'accept must be in'), (lambda: accept_threshold([], 0.9), 'no in-distribution')]:
        with pytest.raises(ValueError, match=message): bad()


# ---- calibration ----------------------------------------------------------------------------------------------------
def test_ece_against_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1000, 3, generator=g) * 2, -1).double()
    labels = torch.randint(0, 3, (1000,), generator=g)
    conf, pred = probs.max(-1)
    ece = 0.0
    for b in range(10):
        inside = (conf >= b / 10) & (conf < (b + 1) / 10) if b < 9 else conf >= 0.9
        if inside.any(): ece += inside.double().mean() * abs((pred[inside] == labels[inside]).double().mean() - conf[inside].mean())
    assert expected_calibration_error(labels, probs, 10) == pytest.approx(float(ece), abs=1e-12)
    assert calibration_bins(labels, probs, 10)['count'].sum() == 1000
    with pytest.raises(ValueError, match='n_bins'): calibration_bins(labels, probs, 0)
    with pytest.raises(ValueError, match='true class ids come first'): expected_calibration_error(probs, labels)


def test_temperature_undoes_a_sharpening():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(20000, 4, generator=g) * 2
    labels = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
    assert fit_temperature(logits * 3, labels) == pytest.approx(3.0, rel=0.05)
    assert fit_temperature(logits / 2, labels) == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError, match=r'logits must be \(N, C\)'): fit_temperature(logits[:, 0], labels)


def test_scores():
    lg = torch.tensor([[5.0, -5.0], [0.0, 0.0], [-2.0, -2.0]])
    assert msp_score(lg).tolist() == pytest.approx([-torch.sigmoid(torch.tensor(10.0)).item(), -0.5, -0.5])
    assert max_logit_score(lg).tolist() == [-5.0, 0.0, 2.0]
    assert energy_score(lg).tolist() == pytest.approx([-torch.logsumexp(lg[i], 0).item() for i in range(3)])
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    m = Mahalanobis.fit(x, shrinkage=0.0)
    d = x.double() - x.double().mean(0)
    want = torch.einsum('nh,hg,ng->n', d, torch.linalg.inv(d.T @ d / len(x)), d)
    assert torch.allclose(m(x).double(), want, rtol=1e-4)
    with pytest.raises(ValueError, match='labels must be'): Mahalanobis.fit(x, torch.zeros(3))
    with pytest.raises(ValueError, match='means must be'): Mahalanobis(torch.zeros(2, 3), torch.eye(4))


# ---- the shifted texts: packaged files and a user's own -------------------------------------------------------------
def test_packaged_sets():
    heads, bbc = guardian_headlines(), bbc_news()
    assert len(heads) > 4000 and len(set(heads)) == len(heads) and all(h.strip() == h and h for h in heads)
    assert len(bbc) == 2225 and {x.label for x in bbc} == {'business', 'entertainment', 'politics', 'sports', 'tech'}
    assert all(x.text and len(x.text) < 1000 for x in bbc)
    assert not any('\ufffd' in x.text for x in bbc)          # Latin-1 files decoded, not replaced


def test_user_files_and_broken_ones(tmp_path):
    with bz2.open(tmp_path / 'h.csv.bz2', 'wt', newline='', encoding='utf-8') as f:
        w = csv.writer(f); w.writerow(['', 'Text', 'Date']); w.writerows([[0, 'Rain ☔ again', 'x'], [1, '', 'y'], [2, 'Rain ☔ again', 'z'], [3, 'Sun', 'w']])
    assert guardian_headlines(tmp_path / 'h.csv.bz2') == ['Rain ☔ again', 'Sun']
    (tmp_path / 'n.csv').write_text('Title\nx\n')
    with pytest.raises(ValueError, match="n.csv: no 'Text' column"): guardian_headlines(tmp_path / 'n.csv')
    (tmp_path / 'c.csv.bz2').write_bytes(b'not bz2 at all')
    with pytest.raises(ValueError, match='c.csv.bz2: cannot be read'): guardian_headlines(tmp_path / 'c.csv.bz2')
    (tmp_path / 'news' / 'tech').mkdir(parents=True)
    (tmp_path / 'news' / 'tech' / '001.txt').write_bytes('Title\n\nShares rose 5% to \xa310. Then fell.\n'.encode('latin-1'))
    (tmp_path / 'news' / 'tech' / '002.txt').write_text('Title only\n')
    with pytest.raises(ValueError, match='002.txt: expected a title line and a body'): bbc_news(tmp_path / 'news')
    (tmp_path / 'news' / 'tech' / '002.txt').unlink()
    assert bbc_news(tmp_path / 'news') == [LabelledText('Shares rose 5% to £10.', 'tech', 'tech/001.txt')]
    with pytest.raises(FileNotFoundError, match='no folder'): bbc_news(tmp_path / 'missing')
    assert first_sentence('Dr. No arrives. Later.') == 'Dr. No arrives.' and first_sentence('  a\n b ') == 'a b'


# ---- the guard ------------------------------------------------------------------------------------------------------
@pytest.fixture
def folder(tiny_folders, tmp_path):
    return shutil.copytree(tiny_folders['classifier'], tmp_path / 'classifier')


def fitted(folder, method='mahalanobis'):
    model = from_pretrained(folder, 'sequence-classification', device='cpu')
    return model, fit_guard(model, BertTokenizer.from_pretrained(folder), REVIEWS, REVIEWS[::2], method)


@pytest.mark.parametrize('method', ['mahalanobis', 'msp', 'energy', 'max_logit'])
def test_guard_round_trip_and_engine(folder, method):
    model, guard = fitted(folder, method)
    assert guard.accept_rate >= 0.95 and guard.temperature > 0
    guard.save(folder)
    back = OODGuard.load(folder)
    assert (back.method, back.threshold, back.temperature) == (guard.method, guard.threshold, guard.temperature)
    texts = ['A triumph.', 'Shares in the bank fell 5% on Monday.', 'word ' * 80]
    out = text_outputs(model, BertTokenizer.from_pretrained(folder), texts, guard.pooling)
    want_scores, want_in = back(out.logits, out.features)
    eng = Engine.from_folder(folder, device='cpu')
    assert eng.guard is not None and f"guard='{method}'" in repr(eng)
    got = eng.classify(texts)
    for r, s, ok, lg in zip(got, want_scores, want_in, out.logits):
        assert r['ood_score'] == pytest.approx(float(s), rel=1e-4, abs=1e-4) and r['in_distribution'] == bool(ok)
        assert r['scores']['positive'] == pytest.approx(float((lg / guard.temperature).softmax(-1)[1]), abs=1e-5)
    plain = Engine.from_folder(folder, device='cpu', use_guard=False).classify(texts)
    assert all('ood_score' not in r for r in plain) and [r['label'] for r in plain] == [r['label'] for r in got]


def test_guard_through_the_service(folder):
    _, guard = fitted(folder)
    guard.save(folder)
    app = create_app(Engine.from_folder(folder, device='cpu'), Limits(max_texts=8))
    with BackgroundServer(app) as url:
        info = httpx.get(f'{url}/v1/model', timeout=60).json()
        assert info['ood_guard']['method'] == 'mahalanobis' and info['ood_guard']['threshold'] == guard.threshold
        body = httpx.post(f'{url}/v1/classify', json={'texts': ['A triumph.', 'Interest rates rose.']}, timeout=60).json()
        assert all(isinstance(r['ood_score'], float) and isinstance(r['in_distribution'], bool) for r in body['results'])
    (folder / GUARD_FILE).unlink()
    assert Engine.from_folder(folder, device='cpu').guard is None


def test_guard_errors(folder, tiny_folders, tmp_path):
    model, guard = fitted(folder)
    for kwargs, message in [(dict(method='knn', threshold=0.0), "method='knn'"),
                            (dict(method='msp', threshold=0.5, num_labels=2), 'outside the range of msp scores'),
                            (dict(method='mahalanobis', threshold=-1.0, mahalanobis=guard.mahalanobis), 'outside the range'),
                            (dict(method='msp', threshold=-0.9, temperature=0.0), 'temperature must be a positive'),
                            (dict(method='msp', threshold=-0.9, mahalanobis=guard.mahalanobis), 'needs its fitted statistics'),
                            (dict(method='mahalanobis', threshold=1.0), 'needs its fitted statistics'),
                            (dict(method='mahalanobis', threshold=1.0, mahalanobis=guard.mahalanobis, hidden_size=7), 'not hidden_size=7')]:
        with pytest.raises(ValueError, match=message): OODGuard(**kwargs)
    with pytest.raises(ValueError, match=r'features must be \(N, 32\)'): guard.score(None, torch.zeros(2, 5))
    with pytest.raises(ValueError, match='fitted for 2 classes'): guard.score(torch.zeros(2, 3), torch.zeros(2, 32))
    with pytest.raises(ValueError, match="labels \\['meh'\\] are not among"):
        fit_guard(model, BertTokenizer.from_pretrained(folder), [LabelledText('x', 'meh')], REVIEWS)
    guard.save(folder)
    # a guard beside other weights: the same config, different numbers
    other = shutil.copytree(folder, tmp_path / 'other')
    m2 = from_pretrained(other, 'sequence-classification', device='cpu')
    with torch.no_grad(): m2.classifier.bias += 1
    save_pretrained(m2, BertTokenizer.from_pretrained(other), other, overwrite=True)
    with pytest.raises(ValueError, match='fitted for other weights'): OODGuard.load(other)
    with pytest.raises(ValueError, match='fitted for other weights'): Engine.from_folder(other, device='cpu')
    assert Engine.from_folder(other, device='cpu', use_guard=False).guard is None
    # a guard for a model of another shape
    with pytest.raises(ValueError, match='fitted for 2 classes; .* holds a model with 3'):
        OODGuard('msp', -0.9, num_labels=2).save(_three_class(tmp_path, folder))
    # corrupt and foreign files
    (other / GUARD_FILE).write_bytes(b'\x00' * 64)
    with pytest.raises(ValueError, match='not a readable guard file'): OODGuard.load(other)
    from safetensors.torch import save_file
    save_file({'x': torch.zeros(1)}, str(other / GUARD_FILE), metadata={'format': 'something else'})
    with pytest.raises(ValueError, match='not a bert_book OOD guard'): OODGuard.load(other)
    with pytest.raises(ValueError, match='OOD guard works with a sentence classifier'):
        Engine(from_pretrained(tiny_folders['tagger'], 'token-classification', device='cpu'),
               BertTokenizer.from_pretrained(tiny_folders['tagger']), 'token-classification', guard=guard)


def _three_class(tmp_path, folder):
    return tiny.tiny_folder(tmp_path, 'classifier', tokenizer=BertTokenizer.from_pretrained(folder), labels=('a', 'b', 'c'),
                            name='three')


def test_fit_guard_command(folder, tmp_path, capsys):
    from bert_book.cli import main
    for name, xs in (('train.tsv', REVIEWS), ('dev.tsv', REVIEWS[1::2])):
        with open(tmp_path / name, 'w', newline='') as f:
            w = csv.writer(f, delimiter='\t'); w.writerow(['text', 'label']); w.writerows((x.text, x.label) for x in xs)
    args = ['fit-guard', str(folder), '--train', str(tmp_path / 'train.tsv'), '--dev', str(tmp_path / 'dev.tsv'), '--device', 'cpu']
    assert main(args + ['--method', 'energy']) == 0
    report = json.loads(capsys.readouterr().out)
    assert report['method'] == 'energy' and report['dev_examples'] == 6 and (folder / GUARD_FILE).is_file()
    assert main(args) == 1 and 'pass --overwrite' in capsys.readouterr().err
    assert main(args[:4]) == 1 and 'pass both --train and --dev' in capsys.readouterr().err
    assert main(args + ['--overwrite', '--method', 'mahalanobis']) == 0 and OODGuard.load(folder).pooling == 'cls'
    # the installed command, in its own process, answers with the guard's verdict
    p = subprocess.run([sys.executable, '-m', 'bert_book.cli', 'predict', str(folder), 'A triumph.'], capture_output=True, text=True, timeout=120, env=ENV)
    assert p.returncode == 0 and set(json.loads(p.stdout)) >= {'label', 'ood_score', 'in_distribution'}, p.stderr


# ---- the guard knows what it was fitted on: weights (sharded too), length, precision ----------------------------------
def _write_shards(folder, state, shards):
    from safetensors.torch import save_file
    for name, keys in shards.items(): save_file({k: state[k].contiguous() for k in keys}, str(folder / name), metadata={'format': 'pt'})


def _sharded(folder, tmp_path):
    "A copy of `folder` whose weights are two shards and an index; returns (folder, state, shards)."
    from safetensors.torch import load_file
    sh = shutil.copytree(folder, tmp_path / 'sharded')
    state = load_file(str(sh / 'model.safetensors')); (sh / 'model.safetensors').unlink()
    keys = sorted(state)
    shards = {'model-00001-of-00002.safetensors': keys[:len(keys) // 2], 'model-00002-of-00002.safetensors': keys[len(keys) // 2:]}
    _write_shards(sh, state, shards)
    (sh / 'model.safetensors.index.json').write_text(json.dumps({'metadata': {}, 'weight_map': {k: n for n, ks in shards.items() for k in ks}}))
    return sh, state, shards


def test_guard_on_sharded_weights_is_bound_to_the_shards(folder, tmp_path):
    sh, state, shards = _sharded(folder, tmp_path)
    fitted(sh, 'msp')[1].save(sh)
    before = Engine.from_folder(sh, device='cpu')
    assert before.guard is not None
    state['classifier.bias'] = state['classifier.bias'] + 1        # new numbers in a shard; the index is unchanged
    _write_shards(sh, state, shards)
    with pytest.raises(ValueError, match='fitted for other weights'): OODGuard.load(sh)
    with pytest.raises(ValueError, match='fitted for other weights'): Engine.from_folder(sh, device='cpu')
    assert Engine.from_folder(sh, device='cpu', use_guard=False).weights_sha256 != before.weights_sha256


LONG = [' '.join(x.text for x in REVIEWS[i:] + REVIEWS[:i]) for i in range(4)]      # ~100 tokens each


def test_guard_scores_at_the_length_it_was_fitted_at(folder):
    from bert_book.service import engine_info
    model = from_pretrained(folder, 'sequence-classification', device='cpu')
    tok = BertTokenizer.from_pretrained(folder)
    guard = fit_guard(model, tok, REVIEWS, REVIEWS + [LabelledText(t, 'positive') for t in LONG], 'mahalanobis', max_length=12)
    assert guard.max_length == 12
    guard.save(folder)
    assert OODGuard.load(folder).max_length == 12
    eng = Engine.from_folder(folder, device='cpu')
    assert eng.max_length == 32 and eng.classify_max_length == 12 and engine_info(eng)['ood_guard']['max_length'] == 12
    got = eng.classify(LONG + ['A triumph.'])
    want = guard(*[getattr(text_outputs(model, tok, LONG + ['A triumph.'], 'cls', max_length=12), k) for k in ('logits', 'features')])
    for r, s, ok in zip(got, *want):
        assert r['ood_score'] == pytest.approx(float(s), rel=1e-4) and r['in_distribution'] == bool(ok)
    assert [r['truncated'] for r in got] == [True] * 4 + [False]
    # without a length asked for, the guard records the model's own limit
    assert fit_guard(model, tok, REVIEWS, REVIEWS, 'msp').max_length == 32


def test_a_guard_saved_without_a_length_is_served_at_the_engine_length_with_a_warning(folder):
    from safetensors import safe_open
    from safetensors.torch import save_file
    fitted(folder, 'msp')[1].save(folder)
    with safe_open(str(folder / GUARD_FILE), 'pt') as f: meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta = {k: v for k, v in meta.items() if k not in ('max_length', 'precision')}      # as an older bert_book wrote it
    save_file(tensors, str(folder / GUARD_FILE), metadata=meta)
    assert OODGuard.load(folder).max_length is None and OODGuard.load(folder).precision == 'float32'
    with pytest.warns(UserWarning, match='does not record the length'): eng = Engine.from_folder(folder, device='cpu')
    assert eng.classify_max_length == eng.max_length


def test_guard_refuses_another_precision(folder, tmp_path, capsys):
    from bert_book.compression import quantize_for_serving
    model, guard = fitted(folder)
    assert guard.precision == 'float32'
    guard.save(folder)
    with pytest.raises(ValueError, match=r"fitted on the float32 model.*runs in int8.*--quantize int8"):
        Engine.from_folder(folder, device='cpu', quantize='int8')
    tok = BertTokenizer.from_pretrained(folder)
    int8 = quantize_for_serving(model)
    g8 = fit_guard(int8, tok, REVIEWS, REVIEWS[::2])
    assert g8.precision == 'int8'
    g8.save(folder)
    assert OODGuard.load(folder).precision == 'int8'
    eng = Engine.from_folder(folder, device='cpu', quantize='int8')
    texts = ['A triumph.', 'Shares fell 5%.']
    o = text_outputs(int8, tok, texts, 'cls')
    assert [r['in_distribution'] for r in eng.classify(texts)] == g8(o.logits, o.features)[1].tolist()
    with pytest.raises(ValueError, match=r"fitted on the int8 model.*runs in float32"): Engine.from_folder(folder, device='cpu')
    # the command line fits the int8 guard
    from bert_book.cli import main
    with open(tmp_path / 'd.tsv', 'w', newline='') as f:
        w = csv.writer(f, delimiter='\t'); w.writerow(['text', 'label']); w.writerows((x.text, x.label) for x in REVIEWS)
    args = ['fit-guard', str(folder), '--train', str(tmp_path / 'd.tsv'), '--dev', str(tmp_path / 'd.tsv'), '--device', 'cpu', '--overwrite']
    assert main(args) == 0 and OODGuard.load(folder).precision == 'float32'
    assert main(args + ['--quantize', 'int8']) == 0 and OODGuard.load(folder).precision == 'int8'
    assert json.loads(capsys.readouterr().out.splitlines()[-1])['precision'] == 'int8'


def test_a_guard_needs_two_classes(folder, tmp_path):
    from dataclasses import replace
    from bert_book.heads import BertForSequenceClassification
    model = from_pretrained(folder, 'sequence-classification', device='cpu')
    reg = BertForSequenceClassification(replace(model.config, num_labels=1, id2label={0: 'rating'}, label2id={'rating': 0})).eval()
    with pytest.raises(ValueError, match='two or more classes'):
        fit_guard(reg, BertTokenizer.from_pretrained(folder), [LabelledText('x', 'rating')] * 2, [LabelledText('x', 'rating')])
    with pytest.raises(ValueError, match='two or more classes'):
        Engine(reg, BertTokenizer.from_pretrained(folder), 'sequence-classification', guard=OODGuard('energy', 0.0))


# ---- temperature bounds and the exact threshold -----------------------------------------------------------------------
def test_temperature_without_a_finite_optimum_stops_at_a_bound():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (40,), generator=g)
    logits = torch.randn(40, 2, generator=g) * 0.3
    logits[torch.arange(40), labels] += 1.0                    # every example right: the loss falls as T -> 0
    with pytest.warns(UserWarning, match='lower bound'): assert fit_temperature(logits, labels) == pytest.approx(0.05)
    with pytest.warns(UserWarning, match='upper bound'): assert fit_temperature(-logits, labels) == pytest.approx(20.0)
    with pytest.warns(UserWarning, match='lower bound'): assert fit_temperature(logits, labels, bounds=(0.5, 2)) == pytest.approx(0.5)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')                         # a finite optimum inside the bounds: no warning
        labels[:5] = 1 - labels[:5]
        assert 0.05 < fit_temperature(logits, labels) < 20
    with pytest.raises(ValueError, match='bounds'): fit_temperature(logits, labels, bounds=(2, 1))


@pytest.mark.parametrize('per_mille', [70, 550, 950, 900, 333, 999, 1, 1000])
def test_accept_threshold_accepts_the_smallest_count_that_reaches_accept(per_mille):
    accept = per_mille / 1000
    for n in range(1, 2001):
        want = -(-per_mille * n // 1000)                        # ceil(accept · n) in integers: no rounding
        assert accept_threshold(torch.arange(n, dtype=torch.float64), accept) == want - 1, (accept, n)


def test_guardian_headlines_with_a_byte_order_mark(tmp_path):
    rows = 'Text,Date\nRain again,x\nSun,y\n'
    (tmp_path / 'bom.csv').write_text(rows, encoding='utf-8-sig')
    with bz2.open(tmp_path / 'bom.csv.bz2', 'wt', encoding='utf-8-sig') as f: f.write(rows)
    assert guardian_headlines(tmp_path / 'bom.csv') == guardian_headlines(tmp_path / 'bom.csv.bz2') == ['Rain again', 'Sun']
