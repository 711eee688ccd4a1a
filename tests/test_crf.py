"""bert_book.crf seen from outside: the hand-written CRF against pytorch-crf (same log-likelihoods and best paths with
-100 labels, a first position that is not a word start, empty rows); constrained and CRF decoding never emit a tag
sequence the scheme forbids (hypothesis); the WNUT-16 reader on tweets with URLs, @mentions, hashtags and emoji, and
its errors; a saved CRF tagger round-trips (and transformers says what it drops); the decode choice through the
pipeline, a real HTTP server and the command line."""
import importlib
import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

torchcrf = importlib.import_module('torchcrf')
httpx = importlib.import_module('httpx')

from bert_book.core import seed_everything
from bert_book.crf import (CRF, BertCRFForTokenClassification, allowed_transitions, constrained_decode, grammar_scores,
                           labels_scheme, pack, viterbi, word_start_mask, has_crf)
from bert_book.data import TaggedSentence, load_corpus, sequence_error
from bert_book.datasets import read_wnut, wnut16
from bert_book.heads import BertForTokenClassification
from bert_book.pretrained import folder_task, from_pretrained, load_model, save_pretrained, load_state_dict
from bert_book.service import BackgroundServer, create_app, engine_info
from bert_book.engine import Engine
from bert_book.alignment import encode_ner, NERCollator
from bert_book.token_classification import NERPipeline, train_ner, predict_ner
from bert_book.tokenizer import train_wordpiece
from bert_book.training import TrainingConfig
from tiny import tiny_config

IOB2 = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC', 'B-ORG', 'I-ORG']
BIOES = ['O'] + [f'{p}-{t}' for t in ('PER', 'LOC') for p in 'BIES']


def random_crf(C: int, seed: int) -> tuple[CRF, 'torchcrf.CRF']:
    "Our CRF and pytorch-crf's with the same random (not small) parameters."
    torch.manual_seed(seed)
    ours, theirs = CRF(C), torchcrf.CRF(C, batch_first=True)
    with torch.no_grad():
        for name in ('transitions', 'start_transitions', 'end_transitions'):
            getattr(ours, name).normal_(0, 2)
            getattr(theirs, name).copy_(getattr(ours, name))
    return ours, theirs


# --- the CRF against pytorch-crf --------------------------------------------------------------------------------------

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_crf_matches_pytorch_crf_with_holes_and_minus_100(seed):
    C, B, T = 9, 12, 30
    ours, theirs = random_crf(C, seed)
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(B, T, C, generator=g) * 4
    mask = torch.rand(B, T, generator=g) < 0.5
    mask[:, 0] = False                      # [CLS]: the first position is never a word start
    mask[3, :] = False                      # a row with nothing labelled
    mask[4, :] = False; mask[4, T - 1] = True   # a row whose one labelled position is the last
    labels = torch.randint(0, C, (B, T), generator=g).masked_fill(~mask, -100)
    llh = ours.log_likelihood(emissions, labels, mask)
    paths = ours.decode(emissions, mask, constrained=False)
    assert llh[3].item() == 0.0 and paths[3] == []
    packed, pmask, ptags = pack(emissions, mask, labels)
    rows = [i for i in range(B) if mask[i].any()]                   # pytorch-crf cannot take an empty row
    want = theirs(packed[rows], ptags[rows].clamp(min=0), pmask[rows], reduction='none')
    assert (llh[rows] - want).abs().max().item() < 1e-5 * max(1.0, want.abs().max().item())
    assert [paths[i] for i in rows] == theirs.decode(packed[rows], pmask[rows])
    assert [len(p) for p in paths] == mask.sum(1).tolist()


def test_crf_loss_is_pytorch_crf_sum_and_gradients_agree():
    ours, theirs = random_crf(5, 7)
    g = torch.Generator().manual_seed(7)
    em = torch.randn(4, 6, 5, generator=g, requires_grad=True)
    mask = torch.ones(4, 6, dtype=torch.bool); mask[1, 4:] = False; mask[2, 1:] = False
    tags = torch.randint(0, 5, (4, 6), generator=g)
    ours(em, tags, mask).backward()
    g_ours = ours.transitions.grad.clone()
    (-theirs(em, tags, mask, reduction='sum')).backward()
    assert torch.allclose(g_ours, theirs.transitions.grad, atol=1e-5)


def test_crf_log_likelihood_is_a_distribution_and_viterbi_its_mode():
    crf, _ = random_crf(4, 3)
    em = torch.randn(1, 4, 4)
    every = torch.tensor(list(itertools.product(range(4), repeat=4)))
    llh = crf.log_likelihood(em.expand(len(every), -1, -1), every, torch.ones(len(every), 4, dtype=torch.bool))
    assert abs(llh.exp().sum().item() - 1) < 1e-5
    assert crf.decode(em, torch.ones(1, 4, dtype=torch.bool), constrained=False)[0] == every[llh.argmax()].tolist()


def test_crf_bad_input_is_named():
    crf = CRF(3)
    with pytest.raises(ValueError, match=r'emissions must be \(batch, length, 3\)'): crf.decode(torch.zeros(2, 4, 5), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='mask has shape'): crf.decode(torch.zeros(2, 4, 3), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r'in \[0, 3\)'):
        crf.log_likelihood(torch.zeros(1, 2, 3), torch.tensor([[0, 7]]), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match='prefix'): viterbi(torch.zeros(1, 3, 3), torch.tensor([[False, True, True]]),
                                                            torch.zeros(3, 3), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="label 2 is 'PER'"): labels_scheme(['O', 'B-PER', 'PER'])
    with pytest.raises(ValueError, match='4 labels for 3 tags'): CRF(3, labels=['O', 'B-X', 'I-X', 'B-Y'])
    with pytest.raises(ValueError, match='IOB2'): allowed_transitions(['O', 'B-X', 'I-X'], 'IOB1')


# --- the grammar is never broken --------------------------------------------------------------------------------------

scores_strategy = st.tuples(st.sampled_from(['IOB2', 'BIOES']), st.integers(0, 2**31 - 1),
                            st.lists(st.integers(0, 12), min_size=1, max_size=5), st.sampled_from([0.1, 1.0, 10.0, 1e4]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scores_strategy)
def test_constrained_and_crf_decoding_never_emit_an_invalid_sequence(case):
    scheme, seed, lengths, scale = case
    labels = IOB2 if scheme == 'IOB2' else BIOES
    g = torch.Generator().manual_seed(seed)
    per_sentence = [(torch.randn(n, len(labels), generator=g) * scale).log_softmax(-1) for n in lengths]
    for ids, n in zip(constrained_decode(per_sentence, labels), lengths):
        assert len(ids) == n and sequence_error([labels[i] for i in ids], scheme) is None
    crf = CRF(len(labels), labels)
    with torch.no_grad():                       # transitions that push hard towards forbidden steps
        crf.transitions.copy_(torch.randn(len(labels), len(labels), generator=g) * scale)
        crf.start_transitions.copy_(torch.randn(len(labels), generator=g) * scale)
        crf.end_transitions.copy_(torch.randn(len(labels), generator=g) * scale)
    T = max(lengths)
    em = torch.randn(len(lengths), T + 2, len(labels), generator=g) * scale
    mask = torch.zeros(len(lengths), T + 2, dtype=torch.bool)
    for i, n in enumerate(lengths):              # holes: the labelled positions scattered over the row
        mask[i, torch.randperm(T + 1, generator=g)[:n] + 1] = True
    for ids, n in zip(crf.decode(em, mask), lengths):
        assert len(ids) == n and sequence_error([labels[i] for i in ids], scheme) is None


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.sampled_from(['IOB2', 'BIOES']))
def test_constrained_viterbi_is_the_best_allowed_sequence(seed, n, scheme):
    labels = ['O', 'B-A', 'I-A', 'B-B', 'I-B'] if scheme == 'IOB2' else ['O', 'B-A', 'I-A', 'E-A', 'S-A']
    S, Tr, E = grammar_scores(labels)
    lp = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed)).log_softmax(-1)
    def score(seq): return float(S[seq[0]] + E[seq[-1]] + sum(lp[i, k] for i, k in enumerate(seq)) + sum(Tr[a, b] for a, b in zip(seq, seq[1:])))
    best = max(score(s) for s in itertools.product(range(5), repeat=n))
    got = constrained_decode([lp], labels)[0]
    assert abs(score(got) - best) < 1e-5


# --- WNUT-16 ----------------------------------------------------------------------------------------------------------

TWEETS = ('@maria_k\tO\nloving\tO\n#Paris\tB-geo-loc\n😍🔥\tO\nhttps://t.co/x1?a=b&c=d\tO\n\t\n'
          'RT\tO\n@NBA\tB-sportsteam\n:\tO\nLebron\tB-person\nJames\tI-person\n💪\tO\n#NBAFinals\tO\n\n'
          '@maria_k\tO\nloving\tO\n#Paris\tB-geo-loc\n😍🔥\tO\nhttps://t.co/x1?a=b&c=d\tO\n\n'
          'ok\tO\n')


def test_wnut_reader_takes_tweets(tmp_path):
    f = tmp_path / 'tweets.txt'
    f.write_text(TWEETS, encoding='utf-8')
    tweets = read_wnut(f)
    assert len(tweets) == 4
    assert tweets[0].tokens == ['@maria_k', 'loving', '#Paris', '😍🔥', 'https://t.co/x1?a=b&c=d']
    assert [e.label for e in tweets[1].entities()] == ['sportsteam', 'person']
    parts = {s: wnut16(s, path=f, fractions=(0.34, 0.33, 0.33), seed=3) for s in ('train', 'dev', 'test')}
    assert sum(len(p) for p in parts.values()) == 3                  # the repeated tweet once
    assert sorted(x.tokens[0] for p in parts.values() for x in p) == ['@maria_k', 'RT', 'ok']
    assert [x.tokens for x in wnut16('train', path=f, fractions=(0.34, 0.33, 0.33), seed=3)] == [x.tokens for x in parts['train']]
    parts['train'][0].tags[0] = 'B-person'                            # a copy: the cached split is unchanged
    assert wnut16('train', path=f, fractions=(0.34, 0.33, 0.33), seed=3)[0].tags[0] != 'B-person'


def test_wnut_tweets_tokenize_into_words_with_pieces(tmp_path):
    f = tmp_path / 'tweets.txt'
    f.write_text(TWEETS, encoding='utf-8')
    tok = train_wordpiece(load_corpus()[:500], vocab_size=300)
    tweets = read_wnut(f)
    labels = ['O'] + [f'{p}-{t}' for t in ('geo-loc', 'person', 'sportsteam') for p in 'BI']
    data = encode_ner(tweets, tok, {l: i for i, l in enumerate(labels)})
    for x, e in zip(tweets, data.examples):   # every word, emoji included, has exactly one labelled piece
        assert sum(l != -100 for l in e['labels']) == len(x.tokens)


@pytest.mark.parametrize('text,where', [('hello\tO\nworld O\n', 'line 2'), ('hello\tO\nParis\tLOC\n', 'line 2'),
                                         ('a\tO\n\tO\n', 'line 2'), ('', 'no tagged tweet')])
def test_wnut_reader_names_the_bad_line(tmp_path, text, where):
    f = tmp_path / 'bad.txt'
    f.write_text(text, encoding='utf-8')
    with pytest.raises(ValueError, match=where) as e: read_wnut(f)
    assert 'bad.txt' in str(e.value)


def test_wnut16_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="'dev'"): wnut16('validation')
    with pytest.raises(ValueError, match='summing to 1'): wnut16('train', fractions=(0.5, 0.1, 0.1))
    with pytest.raises(FileNotFoundError): wnut16('train', path=tmp_path / 'nope.txt')


def test_wnut16_bundled_split_is_seeded_and_disjoint():
    train, dev, test = (wnut16(s) for s in ('train', 'dev', 'test'))
    assert len(train) > 1500 and len(dev) > 150 and len(test) > 150
    seen = {tuple(x.tokens) for x in train}
    assert not seen & {tuple(x.tokens) for x in test} and not seen & {tuple(x.tokens) for x in dev}
    assert [x.tokens for x in wnut16('test')] == [x.tokens for x in test]


# --- a CRF tagger: training, saving, loading, decoding -----------------------------------------------------------------

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tokenizer, a tiny plain tagger and the same tagger with a CRF, saved as folders."
    root = tmp_path_factory.mktemp('crf')
    tok = train_wordpiece(load_corpus()[:1000], vocab_size=400, model_max_length=32)
    cfg = tiny_config(tok.vocab_size, labels=IOB2)
    seed_everything(0)
    plain = BertForTokenClassification(cfg).eval()
    crf = BertCRFForTokenClassification(cfg).eval()
    crf.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        crf.crf.transitions.normal_(0, 3); crf.crf.start_transitions.normal_(0, 3); crf.crf.end_transitions.normal_(0, 3)
    return {'tok': tok, 'plain': plain, 'crf': crf, 'plain_dir': save_pretrained(plain, tok, root / 'plain'),
            'crf_dir': save_pretrained(crf, tok, root / 'crf-tagger'), 'root': root}


def test_saved_crf_tagger_round_trips(tiny):
    back = load_model(tiny['crf_dir'], device='cpu')
    assert type(back) is BertCRFForTokenClassification and has_crf(back)
    assert json.loads((tiny['crf_dir'] / 'config.json').read_text())['architectures'] == ['BertCRFForTokenClassification']
    state = back.state_dict()
    assert {'crf.transitions', 'crf.start_transitions', 'crf.end_transitions'} <= set(state)
    assert all(torch.equal(v, state[k]) for k, v in tiny['crf'].state_dict().items())
    assert folder_task(tiny['crf_dir']) == 'token-classification'
    assert type(load_model(tiny['plain_dir'], device='cpu')) is BertForTokenClassification
    sents = [['Angela', 'Merkel', 'visited', 'Paris'], ['ok']]
    assert predict_ner(back, tiny['tok'], sents) == predict_ner(tiny['crf'], tiny['tok'], sents)


def test_transformers_loads_the_encoder_and_classifier_and_names_what_it_drops(tiny):
    transformers = pytest.importorskip('transformers')
    transformers.logging.set_verbosity_error()
    hf, info = transformers.AutoModelForTokenClassification.from_pretrained(tiny['crf_dir'], output_loading_info=True)
    assert sorted(info['unexpected_keys']) == ['crf.end_transitions', 'crf.start_transitions', 'crf.transitions']
    assert not info['missing_keys']
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        assert torch.allclose(hf.eval()(input_ids=ids).logits, tiny['crf'](ids).logits, atol=1e-5)


def test_crf_folder_without_its_crf_weights_is_an_error(tiny):
    broken = tiny['root'] / 'broken'
    save_pretrained(tiny['crf'], tiny['tok'], broken)
    from safetensors.torch import save_file
    w = load_state_dict(broken)
    del w['crf.start_transitions']
    save_file(w, str(broken / 'model.safetensors'))
    with pytest.raises(ValueError, match='crf.start_transitions'): load_model(broken, device='cpu')


def test_pipeline_crf_decoding_equals_the_models_own(tiny):
    tok, model = tiny['tok'], tiny['crf']
    sents = [['Angela', 'Merkel', 'visited', 'Lüdenscheid', 'yesterday'], ['the', 'cat'], ['Paris']]
    data = encode_ner([TaggedSentence(s, ['O'] * len(s)) for s in sents], tok, {l: i for i, l in enumerate(IOB2)})
    batch = NERCollator(tok.pad_token_id)([data[i] for i in range(len(sents))])
    own = model.decode(batch['input_ids'], batch['attention_mask'], mask=batch['labels'] != -100)
    starts = word_start_mask([e['word_ids'] for e in data.examples], batch['input_ids'].shape[1])
    assert torch.equal(starts, batch['labels'] != -100)
    assert predict_ner(model, tok, sents) == [[IOB2[i] for i in p] for p in own]
    for decode in ('constrained', 'crf'):
        for tags in predict_ner(model, tok, sents, decode=decode): assert sequence_error(tags) is None


def test_decode_choice_errors(tiny):
    tok = tiny['tok']
    with pytest.raises(ValueError, match='CRF head'): NERPipeline(tiny['plain'], tok, decode='crf', device='cpu')
    with pytest.raises(ValueError, match='choose one of'): NERPipeline(tiny['plain'], tok, decode='viterbi', device='cpu')
    with pytest.raises(ValueError, match="aggregation='first'"): NERPipeline(tiny['crf'], tok, aggregation='max', device='cpu')
    pipe = NERPipeline(tiny['plain'], tok, device='cpu')
    assert pipe.decode == 'argmax' and NERPipeline(tiny['crf'], tok, device='cpu').decode == 'crf'
    with pytest.raises(ValueError, match='CRF head'): pipe('Paris', decode='crf')


def test_train_ner_with_crf_learns_its_transitions():
    tok = train_wordpiece(load_corpus()[:500], vocab_size=300)
    sents = [TaggedSentence(['Anna', 'Berg', 'lives', 'in', 'Oslo'], ['B-PER', 'I-PER', 'O', 'O', 'B-LOC']),
             TaggedSentence(['Oslo', 'is', 'cold'], ['B-LOC', 'O', 'O'])] * 8
    cfg = tiny_config(tok.vocab_size)
    training = TrainingConfig(max_steps=12, batch_size=8, lr=1e-3, progress=False, metric_for_best='f1')
    seed_everything(0)
    model, history = train_ner(sents, sents[:2], tokenizer=tok, training=training, config=cfg, head=BertCRFForTokenClassification)
    assert has_crf(model) and history.eval[-1]['f1'] > 0
    first_loss, last_loss = history.train[0]['loss'], history.train[-1]['loss']
    assert last_loss < first_loss
    # at 100x the rate the CRF's scores moved well beyond their uniform(-0.1, 0.1) start: B-PER -> I-PER is favoured
    l2i = model.config.label2id
    assert model.crf.transitions[l2i['B-PER'], l2i['I-PER']] > model.crf.transitions[l2i['O'], l2i['I-PER']] + 0.2
    with pytest.raises(ValueError, match='class_weights'): train_ner(sents, sents, tokenizer=tok, training=training, config=cfg, head=BertCRFForTokenClassification, class_weights='balanced')
    with pytest.raises(ValueError, match='first sub-word'): train_ner(sents, sents, tokenizer=tok, training=training, config=cfg, head=BertCRFForTokenClassification, label_all_subwords=True)


# --- the service and the command line ---------------------------------------------------------------------------------

def test_decode_choice_through_a_real_server(tiny):
    texts = ['Angela Merkel visited Paris and Berlin yesterday .', 'ok']
    crf_engine = Engine.from_folder(tiny['crf_dir'], device='cpu')
    plain_engine = Engine.from_folder(tiny['plain_dir'], device='cpu')
    assert type(crf_engine.model) is BertCRFForTokenClassification and engine_info(crf_engine)['decode'] == 'crf'
    def strip(results): return [[(e['text'], e['label'], e['start'], e['end']) for e in r] for r in results]
    with BackgroundServer(create_app(crf_engine)) as url:
        assert httpx.get(f'{url}/v1/model').json()['decode'] == 'crf'
        for decode in (None, 'argmax', 'constrained', 'crf'):
            body = {'texts': texts} if decode is None else {'texts': texts, 'decode': decode}
            r = httpx.post(f'{url}/v1/ner', json=body, timeout=60)
            assert r.status_code == 200, r.text
            assert strip(r.json()['results']) == strip(crf_engine.ner(texts, decode=decode or 'crf'))
        r = httpx.post(f'{url}/v1/ner', json={'texts': texts, 'decode': 'beam'}, timeout=60)
        assert r.status_code == 400 and 'beam' in r.json()['detail']
        r = httpx.post(f'{url}/v1/ner', json={'texts': texts, 'decode': 3}, timeout=60)
        assert r.status_code == 422
    with BackgroundServer(create_app(plain_engine)) as url:
        r = httpx.post(f'{url}/v1/ner', json={'texts': texts, 'decode': 'crf'}, timeout=60)
        assert r.status_code == 400 and 'CRF head' in r.json()['detail']
        r = httpx.post(f'{url}/v1/ner', json={'texts': texts, 'decode': 'constrained'}, timeout=60)
        assert r.status_code == 200 and strip(r.json()['results']) == strip(plain_engine.ner(texts, decode='constrained'))
    # the answers differ by decoding where the tagger's argmax breaks the grammar: the CRF's strong random transitions
    argmax, crf = crf_engine.ner(texts, decode='argmax'), crf_engine.ner(texts, decode='crf')
    assert strip(argmax) != strip(crf)


def test_cli_predict_decode(tiny):
    env = {**os.environ, 'BERT_BOOK_DEVICE': 'cpu', 'OMP_NUM_THREADS': '1'}
    def cli(*args):
        p = subprocess.run([sys.executable, '-m', 'bert_book.cli', *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
        return p.returncode, p.stdout, p.stderr
    rc, out, err = cli('predict', tiny['crf_dir'], 'Angela Merkel visited Paris', '--decode', 'constrained')
    assert rc == 0, err
    want = Engine.from_folder(tiny['crf_dir'], device='cpu').ner(['Angela Merkel visited Paris'], decode='constrained')[0]
    got = json.loads(out)['entities']
    assert [(e['text'], e['label']) for e in got] == [(e['text'], e['label']) for e in want]
    rc, _, err = cli('predict', tiny['plain_dir'], 'Paris', '--decode', 'crf')
    assert rc == 1 and 'CRF head' in err and 'Traceback' not in err


def test_a_crf_folder_is_not_loaded_without_its_crf(tiny):
    with pytest.raises(ValueError, match='BertCRFForTokenClassification.*load_model'):
        from_pretrained(tiny['crf_dir'], 'token-classification', device='cpu')
    assert type(from_pretrained(tiny['crf_dir'], device='cpu')).__name__ == 'BertModel'   # its encoder alone: fine
    assert has_crf(load_model(tiny['crf_dir'], device='cpu'))
