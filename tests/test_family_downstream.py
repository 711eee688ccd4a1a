"""Everything downstream takes any family member unchanged: from a transformers-made RoBERTa, XLM-R, DistilBERT or
ELECTRA encoder folder, `train_ner` and `train_classifier` fine-tune, the folders they save load in transformers with
the same logits, and the engine, the service, the CLI, int8 quantisation, head pruning and the OOD guard serve them."""
import importlib
import functools, json, os, subprocess, sys, warnings

import httpx
import pytest
import torch

import bert_book as bb
from bert_book.compression import prune_heads, quantize_for_serving
from bert_book.data import load_corpus, load_sample
from bert_book.datasets import LabelledText
from bert_book.ood import fit_guard
from bert_book.pretrained import FAMILIES, load_model, save_pretrained
from bert_book.service import BackgroundServer, create_app
from bert_book.training import TrainingConfig

import tiny

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    transformers = importlib.import_module('transformers')
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

FAMILY_NAMES = ('roberta', 'xlm-roberta', 'distilbert', 'electra')
TEXT = 'Angela Merkel visited Paris and Berlin yesterday .'


@functools.lru_cache(maxsize=None)
def family_tokenizer(family: str):
    "Each family's own kind: byte-level BPE for RoBERTa, Unigram for XLM-R, WordPiece for DistilBERT and ELECTRA."
    if family == 'roberta': return bb.train_bpe(load_corpus()[:2000], vocab_size=600, model_max_length=32)
    if family == 'xlm-roberta': return bb.train_unigram(load_corpus()[:2000], vocab_size=600, model_max_length=32)
    return tiny.tiny_tokenizer()


def peer_encoder(family: str, tok):
    "A random transformers encoder of `family` sized for `tok` (hidden 30, three heads, two layers)."
    v, pad = tok.vocab_size, tok.pad_token_id
    shape = dict(vocab_size=v, hidden_size=30, num_hidden_layers=2, num_attention_heads=3, intermediate_size=44,
                 pad_token_id=pad)
    if family in ('roberta', 'xlm-roberta'):
        cls = transformers.RobertaModel if family == 'roberta' else transformers.XLMRobertaModel
        config = (transformers.RobertaConfig if family == 'roberta' else transformers.XLMRobertaConfig)(
            **shape, max_position_embeddings=tok.model_max_length + pad + 1)
        return cls(config)
    if family == 'electra':
        return transformers.ElectraModel(transformers.ElectraConfig(**shape, embedding_size=14,
                                                                    max_position_embeddings=tok.model_max_length))
    return transformers.DistilBertModel(transformers.DistilBertConfig(
        vocab_size=v, dim=30, n_layers=2, n_heads=3, hidden_dim=44, pad_token_id=pad,
        max_position_embeddings=tok.model_max_length))


@pytest.fixture(scope='module', params=FAMILY_NAMES)
def family_folders(request, tmp_path_factory):
    "An encoder folder of the family, and the tagger and classifier fine-tuned from it, saved."
    family, root = request.param, tmp_path_factory.mktemp(request.param)
    tok = family_tokenizer(family)
    torch.manual_seed(0)
    peer_encoder(family, tok).save_pretrained(root / 'encoder')
    tok.save(root / 'encoder')
    training = TrainingConfig(num_epochs=1, batch_size=8, lr=1e-3, progress=False, device='cpu', seed=0)
    sentences = load_sample('train')[:48]
    tagger = bb.train_ner(sentences[:32], sentences[32:], encoder=root / 'encoder', training=training).model
    texts = [LabelledText(' '.join(s.tokens), 'person' if any('PER' in t for t in s.tags) else 'other')
             for s in sentences]
    clf = bb.train_classifier(texts[:32], texts[32:], encoder=root / 'encoder', training=training, max_length=32).model
    save_pretrained(tagger, tok, root / 'tagger')
    save_pretrained(clf, tok, root / 'classifier')
    return family, root, tok, texts


def test_trained_models_keep_their_family(family_folders):
    family, root, tok, _ = family_folders
    assert type(bb.BertTokenizer.from_pretrained(root / 'tagger')) is type(tok)
    for name, head in (('tagger', 'ForTokenClassification'), ('classifier', 'ForSequenceClassification')):
        written = json.loads((root / name / 'config.json').read_text())
        assert written['model_type'] == family and written['architectures'] == [FAMILIES[family].prefix + head]


def test_transformers_reads_the_fine_tuned_folders(family_folders):
    family, root, tok, _ = family_folders
    enc = tok([TEXT, 'Paris .'], padding=True, return_tensors='pt')
    for name, auto in (('tagger', transformers.AutoModelForTokenClassification),
                       ('classifier', transformers.AutoModelForSequenceClassification)):
        ours, theirs = load_model(root / name, device='cpu'), auto.from_pretrained(root / name).eval()
        a = ours(enc['input_ids'], enc['attention_mask']).logits
        b = theirs(input_ids=enc['input_ids'], attention_mask=enc['attention_mask']).logits
        real = enc['attention_mask'].bool() if a.dim() == 3 else slice(None)
        assert (a[real] - b[real]).abs().max() <= 1e-5, name


def test_engine_and_service(family_folders):
    family, root, tok, _ = family_folders
    tagger = bb.load(root / 'tagger', device='cpu')
    entities = tagger.ner(TEXT)
    assert all(TEXT[e['start']:e['end']] == e['text'] for e in entities)
    classifier = bb.load(root / 'classifier', device='cpu')
    assert classifier.classify(TEXT)['label'] in ('person', 'other')
    with BackgroundServer(create_app(tagger)) as url:
        r = httpx.post(f'{url}/v1/ner', json={'texts': [TEXT]}, timeout=60)
        assert r.status_code == 200 and r.json()['results'][0] == tagger.ner([TEXT])[0]


def test_cli_predict(family_folders):
    family, root, tok, _ = family_folders
    env = {**os.environ, 'BERT_BOOK_DEVICE': 'cpu', 'OMP_NUM_THREADS': '1'}
    out = subprocess.run([sys.executable, '-m', 'bert_book.cli', 'predict', str(root / 'classifier'), TEXT],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])['label'] in ('person', 'other')


def test_compression_and_guard(family_folders):
    family, root, tok, texts = family_folders
    clf = load_model(root / 'classifier', device='cpu')
    enc = tok([TEXT], return_tensors='pt')
    logits = clf(enc['input_ids'], enc['attention_mask']).logits
    int8 = quantize_for_serving(clf)
    assert (int8(enc['input_ids'], enc['attention_mask']).logits - logits).abs().max() < 0.5
    pruned = prune_heads(load_model(root / 'classifier', device='cpu'), {0: [1]})
    save_pretrained(pruned, tok, root / 'pruned', overwrite=True)
    assert bb.load(root / 'pruned', device='cpu').model.config.pruned_heads == {0: [1]}
    guard = fit_guard(clf, tok, texts[:32], texts[32:], method='mahalanobis', accept=0.9)
    guard.save(root / 'classifier')
    guarded = bb.load(root / 'classifier', device='cpu')
    assert guarded.guard is not None
    results = guarded.classify([t.text for t in texts[32:]])
    assert sum(r['in_distribution'] for r in results) >= 0.9 * len(results)   # the share the threshold accepts
