"""A ModernBERT encoder downstream: from a transformers-made ModernBERT folder with a byte-level BPE tokenizer,
`train_ner` and `train_classifier` build ModernBERT's own heads (chapter 5's `class_for`), the folders they save
load in transformers with the same logits, and the engine, the service, the CLI, int8 quantisation and the OOD guard
serve them, and so does an ONNX export; layer shrinking keeps each block's attention; head pruning, which knows
BERT's block only, refuses it."""
import importlib, json, os, subprocess, sys, warnings

import httpx

import pytest
import torch

import bert_book as bb
from bert_book.data import load_corpus, load_sample
from bert_book.compression import (encoder_linears, model_precision, prune_heads, quantize_for_serving,
                                   shrink_layers)
from bert_book.datasets import LabelledText
from bert_book.modernbert import ModernBertForSequenceClassification, ModernBertForTokenClassification
from bert_book.ood import fit_guard
from bert_book.pretrained import from_pretrained, load_model, save_pretrained
from bert_book.service import BackgroundServer, create_app
from bert_book.training import TrainingConfig

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    transformers = importlib.import_module('transformers')
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

TEXT = 'Angela Merkel visited Paris and Berlin yesterday .'


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    "A random ModernBERT encoder (hidden 36, 3 heads, a window of 8), and a tagger and classifier trained from it."
    root = tmp_path_factory.mktemp('modernbert')
    tok = bb.train_bpe(load_corpus()[:2000], vocab_size=600, model_max_length=32)
    config = transformers.ModernBertConfig(
        vocab_size=tok.vocab_size, hidden_size=36, num_hidden_layers=3, num_attention_heads=3, intermediate_size=48,
        max_position_embeddings=64, local_attention=8, global_attn_every_n_layers=2, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id, attn_implementation='sdpa')
    torch.manual_seed(0)
    transformers.ModernBertModel(config).save_pretrained(root / 'encoder')
    tok.save(root / 'encoder')
    training = TrainingConfig(num_epochs=1, batch_size=8, lr=1e-3, progress=False, device='cpu', seed=0)
    sentences = load_sample('train')[:48]
    tagger = bb.train_ner(sentences[:32], sentences[32:], encoder=root / 'encoder', training=training).model
    texts = [LabelledText(' '.join(s.tokens), 'person' if any('PER' in t for t in s.tags) else 'other')
             for s in sentences]
    clf = bb.train_classifier(texts[:32], texts[32:], encoder=root / 'encoder', training=training, max_length=32).model
    save_pretrained(tagger, tok, root / 'tagger')
    save_pretrained(clf, tok, root / 'classifier')
    return root, tok, tagger, clf, texts


def test_trainers_build_modernberts_own_heads(folders):
    root, tok, tagger, clf, _ = folders
    assert type(tagger) is ModernBertForTokenClassification and type(clf) is ModernBertForSequenceClassification
    assert type(from_pretrained(root / 'encoder', 'token-classification', num_labels=3, device='cpu')) \
        is ModernBertForTokenClassification


def test_transformers_reads_the_fine_tuned_folders(folders):
    root, tok, *_ = folders
    enc = tok([TEXT, 'Paris .'], padding=True, return_tensors='pt')
    for name, auto in (('tagger', transformers.AutoModelForTokenClassification),
                       ('classifier', transformers.AutoModelForSequenceClassification)):
        ours, theirs = load_model(root / name, device='cpu'), auto.from_pretrained(root / name).eval()
        assert type(theirs).__name__.startswith('ModernBert')
        a = ours(enc['input_ids'], enc['attention_mask']).logits
        b = theirs(input_ids=enc['input_ids'], attention_mask=enc['attention_mask']).logits
        real = enc['attention_mask'].bool() if a.dim() == 3 else slice(None)
        assert (a[real] - b[real]).abs().max() <= 1e-5, name


def test_the_engine_serves_them(folders):
    root, *_ = folders
    tagger = bb.load(root / 'tagger', device='cpu')
    entities = tagger.ner(TEXT)
    assert all(TEXT[e['start']:e['end']] == e['text'] for e in entities)
    assert bb.load(root / 'classifier', device='cpu').classify(TEXT)['label'] in ('person', 'other')


def test_service_and_cli(folders):
    root, *_ = folders
    tagger = bb.load(root / 'tagger', device='cpu')
    with BackgroundServer(create_app(tagger)) as url:
        r = httpx.post(f'{url}/v1/ner', json={'texts': [TEXT]}, timeout=60)
        assert r.status_code == 200 and r.json()['results'][0] == tagger.ner([TEXT])[0]
    env = {**os.environ, 'BERT_BOOK_DEVICE': 'cpu', 'OMP_NUM_THREADS': '1'}
    out = subprocess.run([sys.executable, '-m', 'bert_book.cli', 'predict', str(root / 'classifier'), TEXT],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])['label'] in ('person', 'other')


def test_int8_quantises_modernberts_linears(folders):
    root, tok, *_ = folders
    clf = load_model(root / 'classifier', device='cpu')
    names = encoder_linears(clf)
    assert sorted({kind for _, kind in names.values()}) == ['attn.Wo', 'attn.Wqkv', 'mlp.Wi', 'mlp.Wo']
    assert len(names) == 4 * clf.config.num_hidden_layers
    enc = tok([TEXT, 'Paris .'], padding=True, return_tensors='pt')
    int8 = quantize_for_serving(clf)
    assert model_precision(int8) == 'int8' and model_precision(clf) == 'float32'
    quantised = dict(int8.named_modules())
    assert all(isinstance(quantised[n], torch.ao.nn.quantized.dynamic.Linear) for n in names)
    a = clf(enc['input_ids'], enc['attention_mask']).logits
    assert (int8(enc['input_ids'], enc['attention_mask']).logits - a).abs().max() < 0.5
    served = bb.load(root / 'classifier', device='cpu', quantize='int8', use_guard=False)
    assert served.classify(TEXT)['label'] in ('person', 'other')


def test_head_pruning_refuses_modernberts_block_by_name(folders):
    root, *_ = folders
    with pytest.raises(ValueError, match=r"ModernBertForTokenClassification's blocks are its family's own"):
        prune_heads(load_model(root / 'tagger', device='cpu'), {0: [1]})


def test_shrunk_student_keeps_each_blocks_attention_and_loads_in_transformers(folders, tmp_path):
    "DistilBERT's recipe on ModernBERT: the kept blocks keep their global or local attention in the written config."
    root, tok, *_ = folders
    teacher = load_model(root / 'tagger', device='cpu')
    kinds = [layer.attention_type for layer in teacher.bert.encoder.layers]
    student = shrink_layers(teacher, [0, 1])
    assert [layer.attention_type for layer in student.bert.encoder.layers] == kinds[:2]
    save_pretrained(student, tok, tmp_path / 'student')
    theirs = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / 'student').eval()
    assert theirs.config.num_hidden_layers == 2 and list(theirs.config.layer_types) == kinds[:2]
    enc = tok([TEXT, 'Paris .'], padding=True, return_tensors='pt')
    a = student.eval()(enc['input_ids'], enc['attention_mask']).logits
    b = theirs(input_ids=enc['input_ids'], attention_mask=enc['attention_mask']).logits
    real = enc['attention_mask'].bool()
    assert (a[real] - b[real]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match=r"block 1 cannot come first .*attn_norm.* keep layer 0 first"):
        shrink_layers(teacher, [1, 2])


def test_guard(folders):
    root, tok, tagger, clf, texts = folders
    guard = fit_guard(clf, tok, texts[:32], texts[32:], method='mahalanobis', accept=0.9)
    guard.save(root / 'classifier')
    guarded = bb.load(root / 'classifier', device='cpu')
    assert guarded.guard is not None
    results = guarded.classify([t.text for t in texts[32:]])
    assert sum(r['in_distribution'] for r in results) >= 0.9 * len(results)   # the share the threshold accepts


def test_onnx_export_serves_modernbert_with_the_same_outputs(folders, tmp_path):
    "The graph takes any batch and length (the masks and rotary angles are traced, not fixed), and the guard reads it."
    pytest.importorskip('onnxruntime')
    from bert_book.runtimes import export_onnx
    root, tok, *_ = folders
    texts = [TEXT + ' and then a longer tail of words than the window of eight', 'Paris .', TEXT]
    for name, method in (('classifier', 'classify'), ('tagger', 'encode')):
        onnx = export_onnx(root / name, tmp_path / name)
        a = getattr(bb.load(onnx), method)(texts)
        b = getattr(bb.load(root / name, device='cpu', use_guard=False), method)(texts)
        if method == 'classify':
            assert [x['label'] for x in a] == [x['label'] for x in b]
            assert max(abs(x['score'] - y['score']) for x, y in zip(a, b)) <= 1e-4
        else:
            assert max(float((x['logits'] - y['logits']).abs().max()) for x, y in zip(a, b)) <= 1e-4
    texts = folders[-1]
    guard = fit_guard(load_model(tmp_path / 'classifier'), tok, texts[:32], texts[32:], method='mahalanobis',
                      accept=0.9)
    assert guard.pooling != 'pooler'   # ModernBERT's graph has no pooler output; the guard pools the states
