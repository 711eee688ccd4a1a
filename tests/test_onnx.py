"""The ONNX export seen from outside: `export_onnx` and `bert-book export-onnx` write a folder that onnxruntime runs
with the torch model's logits, and that `bb.load` serves with the same API; bad folders give clear errors."""
import json, shutil

import pytest
import torch

import bert_book as bb
from bert_book.cli import run_here
from bert_book.pretrained import load_model
from bert_book.runtimes import ONNX_NAME, OnnxModel, export_onnx
from bert_book.tokenizer import BertTokenizer

pytest.importorskip('onnxruntime', reason="the onnx extra (pip install 'bert_book[onnx]')")

TEXTS = ['Angela Merkel met Emmanuel Macron in Paris.', 'the cat', 'a [MASK] of the town and the long road home',
         'x']


@pytest.fixture(scope='module')
def exported(tiny_folders, tmp_path_factory):
    root = tmp_path_factory.mktemp('onnx')
    return {task: export_onnx(folder, root / task) for task, folder in tiny_folders.items()}


@pytest.mark.parametrize('task', ['tagger', 'mlm', 'classifier'])
def test_logits_match_torch(tiny_folders, exported, task):
    tok = BertTokenizer.from_pretrained(exported[task])
    batch = tok(TEXTS, padding=True, return_tensors='pt')                 # varied lengths: the mask matters
    ids, mask = batch['input_ids'], batch['attention_mask']
    with torch.inference_mode(): want = load_model(tiny_folders[task], device='cpu')(ids, attention_mask=mask).logits
    model = load_model(exported[task])
    assert isinstance(model, OnnxModel)
    for rows in (slice(None), slice(1, 2)):                                # dynamic batch and length
        got = model(ids[rows], attention_mask=mask[rows]).logits
        w = want[rows]
        if got.dim() == 3:                                                 # per token: the real tokens only
            real = mask[rows].bool(); got, w = got[real], w[real]
        assert got.shape == w.shape and (got - w).abs().max() <= 1e-4


def test_engine_serves_the_folder(tiny_folders, exported):
    pairs = [('tagger', 'ner', {}), ('tagger', 'encode', {}), ('classifier', 'classify', {}), ('mlm', 'fill_mask', {})]
    for task, method, kw in pairs:
        texts = ['the [MASK] sat'] if method == 'fill_mask' else TEXTS
        a = getattr(bb.load(exported[task]), method)(texts, **kw)
        b = getattr(bb.load(tiny_folders[task], device='cpu'), method)(texts, **kw)
        if method == 'encode':
            assert [x['tokens'] for x in a] == [x['tokens'] for x in b]
            assert all((x['logits'] - y['logits']).abs().max() <= 1e-4 for x, y in zip(a, b))
        elif method == 'classify':
            assert [x['label'] for x in a] == [x['label'] for x in b]
            assert all(abs(x['score'] - y['score']) <= 1e-4 for x, y in zip(a, b))
        elif method == 'fill_mask':
            assert [c['token_id'] for c in a[0][0]] == [c['token_id'] for c in b[0][0]]
        else:
            assert [[(e['text'], e['label'], e['start']) for e in es] for es in a] == \
                   [[(e['text'], e['label'], e['start']) for e in es] for es in b]
    from bert_book.compression import count_weights
    from bert_book.service import engine_info
    reported = engine_info(bb.load(exported['classifier']))['parameters']      # what /v1/model says
    torch_count = count_weights(bb.load(tiny_folders['classifier']).model)
    assert isinstance(reported, int) and 0.95 * torch_count <= reported <= torch_count   # the export folds a few constants


def test_cli_export_onnx(tiny_folders, tmp_path):
    rc, out, err = run_here('export-onnx', str(tiny_folders['classifier']), str(tmp_path / 'out'))
    assert rc == 0, err
    assert ONNX_NAME in json.loads(out)['files']
    rc, out, err = run_here('predict', str(tmp_path / 'out'), 'A triumph.')
    assert rc == 0, err
    assert json.loads(out)['label'] in ('negative', 'positive')
    rc, _, err = run_here('export-onnx', str(tiny_folders['classifier']), str(tmp_path / 'out'))   # not empty
    assert rc == 1 and 'not an empty folder' in err


def test_corrupt_model_onnx(exported, tmp_path):
    bad = shutil.copytree(exported['tagger'], tmp_path / 'bad')
    (bad / ONNX_NAME).write_bytes(b'\x00 not a graph')
    with pytest.raises(ValueError, match=f'{bad / ONNX_NAME}: not'): bb.load(bad)


def test_missing_tokenizer(exported, tmp_path):
    bad = shutil.copytree(exported['tagger'], tmp_path / 'no-tokenizer')
    for name in ('tokenizer.json', 'vocab.txt'): (bad / name).unlink()
    with pytest.raises(FileNotFoundError, match=f'{bad} holds no tokenizer file: none of tokenizer.json, vocab.txt'): bb.load(bad)


def test_onnx_folder_cannot_be_cast_or_trained(exported):
    with pytest.raises(ValueError, match="cannot be cast to dtype='bfloat16'"): bb.load(exported['tagger'], dtype='bfloat16')
    assert bb.load(exported['tagger'], dtype='auto').precision == 'float32'
    with pytest.raises(ValueError, match='no torch encoder'): load_model(exported['tagger'], 'encoder')
    with pytest.raises(ValueError, match='not on cuda'): load_model(exported['tagger'], device='cuda')


def test_guard_fits_on_the_onnx_classifier_as_on_torch(tiny_folders, exported):
    "The OOD guard's one pass (features and logits) reads an exported classifier as it reads the torch one."
    from bert_book.datasets import LabelledText
    from bert_book.ood import fit_guard
    labels = load_model(tiny_folders['classifier'], device='cpu').config.id2label
    texts = [LabelledText(t, labels[i % len(labels)]) for i, t in enumerate(TEXTS * 6)]
    tok = BertTokenizer.from_pretrained(exported['classifier'])
    models = load_model(tiny_folders['classifier'], device='cpu'), load_model(exported['classifier'])
    guards = [fit_guard(m, tok, texts[:16], texts[16:], method='mahalanobis', accept=0.9) for m in models]
    assert abs(guards[0].threshold - guards[1].threshold) <= 1e-3 * max(1.0, abs(guards[0].threshold))


def test_a_quantised_graph_gives_the_guard_its_features_and_logits(exported, tmp_path):
    "The guard reads features and logits from one run of the graph, so onnxruntime's int8 graph can be guarded too."
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from bert_book.datasets import LabelledText
    from bert_book.ood import fit_guard
    int8 = shutil.copytree(exported['classifier'], tmp_path / 'int8')
    quantize_dynamic(str(exported['classifier'] / ONNX_NAME), str(int8 / ONNX_NAME), weight_type=QuantType.QInt8)
    model = load_model(int8)
    assert model.precision == 'int8'
    tok = BertTokenizer.from_pretrained(int8)
    batch = tok(TEXTS, padding=True, return_tensors='pt')
    out = model.bert(batch['input_ids'], batch['attention_mask'])
    assert torch.equal(model.sentence_logits(out), model(batch['input_ids'], batch['attention_mask']).logits)
    labels = model.config.id2label
    texts = [LabelledText(t, labels[i % len(labels)]) for i, t in enumerate(TEXTS * 6)]
    guard = fit_guard(model, tok, texts[:16], texts[16:], method='mahalanobis', accept=0.9)
    guard.save(int8)
    served = bb.load(int8)
    assert served.guard is not None and served.guard.precision == served.precision == 'int8'
    results = served.classify([t.text for t in texts[16:]])
    assert sum(r['in_distribution'] for r in results) >= 0.9 * len(results)   # the share the threshold accepts
