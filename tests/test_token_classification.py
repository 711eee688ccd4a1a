"""bert_book.token_classification seen from outside: word tags to sub-word labels and back (every strategy, every
scheme), truncation between words, padding, windows, the class-weighted and focal losses, word-level scores equal
seqeval's, and `train_ner` keeping the best checkpoint. seqeval is a test-only dependency."""
import importlib
import warnings
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st

from bert_book.core import BertConfig, seed_everything
from bert_book.data import TaggedSentence, convert_sentences, load_corpus, load_sample, toy_ner
from bert_book.encoder import BertModel
from bert_book.heads import BertForMaskedLM, BertForTokenClassification, IGNORE_INDEX
from bert_book.alignment import (NERCollator, NERDataset, Truncation, align_labels, continuation_tags,
                                 encode_ner, label_list_for, merge_piece_tags, word_pieces,
                                 word_tags_from_labels)
from bert_book.token_classification import (AGGREGATIONS, aggregate_pieces, balanced_class_weights,
                                            check_window, evaluate_ner, focal_loss, forward_by_length,
                                            length_sorted_chunks, ner_loss, plan_windows, predict_ner,
                                            predict_word_probs, train_ner, truncate_ids)
from bert_book.tokenizer import train_wordpiece
from bert_book.training import History, Trained, TrainingConfig
import tiny

SCHEME_PREFIXES = {'IOB1': 'BI', 'IOB2': 'BI', 'IOE1': 'IE', 'IOE2': 'IE', 'BIOES': 'BIES'}
TYPES = ('PER', 'LOC', 'ORG')


@lru_cache(maxsize=None)
def tokenizer():
    "A small WordPiece vocabulary, so that many words split into several pieces."
    return train_wordpiece(load_corpus()[:1500], vocab_size=600)


def labels_of(scheme):
    labels = ['O'] + [f'{p}-{t}' for t in TYPES for p in 'BIES']
    return labels, {l: i for i, l in enumerate(labels)}


WORDS = ['Lüdenscheid', 'a', 'the', 'Zoë', 'Kowalczykowski', 'flew', 'to', 'São', 'Paulo', ',', '.', 'x\u200b',
         '\u200b', 'naïve', 'CO-OP', 'unbelievably', 'Ouagadougou', '1996-12-31', 'é', 'don\'t']


@st.composite
def tagged_sentences(draw, scheme=None):
    "A sentence of words (some of many pieces, one the normalizer deletes) and arbitrary tags of the scheme's prefixes."
    scheme = scheme or draw(st.sampled_from(sorted(SCHEME_PREFIXES)))
    tags = ['O'] + [f'{p}-{t}' for t in TYPES for p in SCHEME_PREFIXES[scheme]]
    n = draw(st.integers(0, 14))
    words = draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n))
    return scheme, TaggedSentence(words, draw(st.lists(st.sampled_from(tags), min_size=n, max_size=n)))


# ---- alignment ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('tag', ['O', 'B-PER', 'I-PER', 'E-PER', 'S-PER', 'PER', 'NN'])
@pytest.mark.parametrize('n', [1, 2, 3, 7])
def test_continuation_tags_invert(tag, n):
    pieces = continuation_tags(tag, n)
    assert len(pieces) == n and merge_piece_tags(pieces) == tag
    if n > 1 and tag.startswith(('B-', 'S-')): assert pieces[0] == 'B-PER' and 'B-PER' not in pieces[1:]  # one opening
    if n > 1 and tag.startswith(('E-', 'S-')): assert pieces[-1] == 'E-PER' and 'E-PER' not in pieces[:-1]  # one closing


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=tagged_sentences(), label_all_subwords=st.booleans())
def test_round_trip_word_tags_to_subword_labels_and_back(data, label_all_subwords):
    scheme, s = data
    labels, label2id = labels_of(scheme)
    enc = encode_ner([s], tokenizer(), label2id, label_all_subwords=label_all_subwords)
    ex = enc[0]
    assert word_tags_from_labels(ex['labels'], ex['word_ids'], dict(enumerate(labels))) == s.tags
    scored = [l for l in ex['labels'] if l != IGNORE_INDEX]
    if label_all_subwords: assert len(scored) == len(ex['input_ids']) - 2     # every sub-word labelled
    else: assert len(scored) == len(s.tokens)                                  # one label per word


@settings(max_examples=60, deadline=None)
@given(data=tagged_sentences(), label_all_subwords=st.booleans())
def test_every_subword_labelling_keeps_the_entities(data, label_all_subwords):
    "Read as one sequence, the sub-word tags hold the same entities as the word tags (one per word's pieces)."
    from bert_book.data import tags_to_spans
    scheme, s = data
    labels, label2id = labels_of(scheme)
    ex = encode_ner([s], tokenizer(), label2id, label_all_subwords=True)[0]
    piece_tags = [labels[l] for l in ex['labels'][1:-1]]
    word_of = ex['word_ids'][1:-1]
    first = {w: i for i, w in reversed(list(enumerate(word_of)))}
    last = {w: i for i, w in enumerate(word_of)}
    expected = [(t, first[a], last[b - 1] + 1) for t, a, b in tags_to_spans(s.tags, scheme)]
    assert [tuple(x) for x in tags_to_spans(piece_tags, scheme)] == expected


class _Oracle(torch.nn.Module):
    "A tagger trained with every sub-word labelled that knows the answer: logits one-hot at one sentence's sub-word labels."
    def __init__(self, input_ids, labels, label_list):
        super().__init__()
        self.config = BertConfig(vocab_size=tokenizer().vocab_size, max_position_embeddings=512,
                                 id2label=dict(enumerate(label_list)))
        self.config.extra['label_all_subwords'] = True
        self.ids = torch.as_tensor(input_ids)
        target = torch.as_tensor(labels).clamp_min(0)                  # the specials' -100: any label, never read
        self.logits = F.one_hot(target, len(label_list)).float() * 20
        self.anchor = torch.nn.Parameter(torch.zeros(()))              # the device the predictions run on

    def forward(self, input_ids, attention_mask=None):
        assert torch.equal(input_ids[0, :len(self.ids)], self.ids)     # the sentence in one window, as encoded
        return type('Out', (), {'logits': self.logits[None, :input_ids.shape[1]]})


@settings(max_examples=80, deadline=None)
@given(data=tagged_sentences())
def test_every_subword_predictions_give_the_word_tags_back(data):
    """Predicted sub-word tags that are exactly the training labels give the word tags back, in every scheme: a word of
    several pieces tagged S-X (pieces B-X ... E-X) or E-X (I-X ... E-X) reads its closing from its last piece."""
    scheme, s = data
    labels, label2id = labels_of(scheme)
    ex = encode_ner([s], tokenizer(), label2id, label_all_subwords=True)[0]
    oracle = _Oracle(ex['input_ids'], ex['labels'], labels)
    assert predict_ner(oracle, tokenizer(), [s.tokens], decode='argmax')[0] == list(s.tags)


@pytest.mark.parametrize('scheme', sorted(SCHEME_PREFIXES))
def test_merge_piece_probs_inverts_continuation_tags(scheme):
    "Every tag of every scheme, in 1 to 4 pieces: sure sub-word predictions of its continuation tags give it back."
    from bert_book.token_classification import closing_plan, merge_piece_probs
    labels = ['O'] + [f'{p}-{t}' for t in TYPES for p in SCHEME_PREFIXES[scheme]]
    plan, eye = closing_plan(labels), torch.eye(len(labels))
    for tag in labels:
        for n in range(1, 5):
            probs = (eye[[labels.index(t) for t in continuation_tags(tag, n)]] * 20).softmax(-1)
            word = merge_piece_probs(probs, plan)
            assert labels[word.argmax()] == tag and word.sum().item() == pytest.approx(1.0)
            if scheme.startswith('IOB'): assert torch.equal(word, probs[0])   # nothing closes: the first piece's


def test_round_trip_on_the_sample_data_in_every_scheme():
    tok = tokenizer()
    for scheme in SCHEME_PREFIXES:
        sents = convert_sentences(load_sample('dev')[:100], 'IOB2', scheme)
        labels = label_list_for(sents, scheme)
        for every in (False, True):
            data = encode_ner(sents, tok, {l: i for i, l in enumerate(labels)}, label_all_subwords=every)
            for s, ex in zip(sents, data.examples):
                assert word_tags_from_labels(ex['labels'], ex['word_ids'], dict(enumerate(labels))) == s.tags


def test_align_labels_with_tensor_word_ids():
    tok = tokenizer()
    enc = tok([['Kowalczykowski', 'flew']], is_split_into_words=True, return_tensors='pt', return_word_ids=True)
    labels, label2id = labels_of('IOB2')
    ids = align_labels(['B-PER', 'O'], enc['word_ids'][0].tolist(), label2id)
    assert ids[0] == IGNORE_INDEX and ids[1] == label2id['B-PER'] and ids.count(label2id['O']) == 1


def test_alignment_errors_name_the_sentence_and_the_label():
    tok, (labels, label2id) = tokenizer(), labels_of('IOB2')
    word_ids = tok(['a', 'b', 'c'], is_split_into_words=True).word_ids()
    with pytest.raises(ValueError, match='sentence 4: 2 tags for 3 words'):
        align_labels(['O', 'O'], word_ids, label2id, sentence=4)
    with pytest.raises(ValueError, match="sentence 9: word 2 has the label 'B-DATE'"):
        align_labels(['O', 'O', 'B-DATE'], word_ids, label2id, sentence=9)
    sents = [TaggedSentence(['Paris'], ['B-LOC']), TaggedSentence(['in', 'Rome'], ['O', 'B-CITY'])]
    with pytest.raises(ValueError, match="train sentence 1: word 1 has the label 'B-CITY'"):
        encode_ner(sents, tok, label2id, what='train sentence')
    sents[0].tags.append('O')
    with pytest.raises(ValueError, match='sentence 0: 1 tokens but 2 tags'):
        encode_ner(sents, tok, label2id)
    with pytest.raises(ValueError, match="sentence 0: word 0: 'B-LOC', the continuation of 'S-LOC', is not in the label list"):
        encode_ner([TaggedSentence(['Kowalczykowski'], ['S-LOC'])], tok, {'O': 0, 'S-LOC': 1}, label_all_subwords=True)
    with pytest.raises(ValueError, match='word 1 has no labelled sub-word'):
        word_tags_from_labels([IGNORE_INDEX, 0, IGNORE_INDEX], [None, 0, 1], {0: 'O'})
    with pytest.raises(TypeError, match='sentence 0 is a str'):
        encode_ner(['not a sentence'], tok, label2id)


def test_a_word_the_normalizer_deletes_keeps_its_tag():
    tok = tokenizer()
    pieces = word_pieces(tok, [['a', '\u200b', 'b']])[0]
    assert pieces[1] == [tok.unk_token_id]
    labels, label2id = labels_of('IOB2')
    ex = encode_ner([TaggedSentence(['a', '\u200b', 'b'], ['O', 'B-PER', 'O'])], tok, label2id)[0]
    assert word_tags_from_labels(ex['labels'], ex['word_ids'], dict(enumerate(labels))) == ['O', 'B-PER', 'O']


def test_label_list_for():
    assert label_list_for(toy_ner()) == ['O', 'B-LOC', 'I-LOC', 'B-ORG', 'I-ORG', 'B-PER', 'I-PER']
    assert label_list_for(toy_ner(), 'BIOES')[:5] == ['O', 'B-LOC', 'I-LOC', 'E-LOC', 'S-LOC']


# ---- truncation between words, padding ---------------------------------------------------------------------------

@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(tagged_sentences('IOB2'), min_size=1, max_size=5), max_length=st.integers(3, 20))
def test_truncation_keeps_whole_words_and_reports_each_cut(data, max_length):
    sents = [s for _, s in data]
    labels, label2id = labels_of('IOB2')
    tok = tokenizer()
    enc = encode_ner(sents, tok, label2id, max_length=max_length)
    n_pieces = [[len(p) for p in ps] for ps in word_pieces(tok, [s.tokens for s in sents])]
    cut = {t.sentence: t for t in enc.truncated}
    for i, (s, ex) in enumerate(zip(sents, enc.examples)):
        assert len(ex['input_ids']) <= max_length
        kept = len({w for w in ex['word_ids'] if w is not None})
        assert len(ex['input_ids']) == 2 + sum(n_pieces[i][:kept])              # whole words only
        if kept < len(s.tokens):
            assert cut[i] == Truncation(i, len(s.tokens), kept)
            assert sum(n_pieces[i][:kept + 1]) > max_length - 2                  # the next word did not fit
            assert word_tags_from_labels(ex['labels'], ex['word_ids'], dict(enumerate(labels))) == s.tags[:kept]
        else: assert i not in cut
    assert enc.lengths == [len(e['input_ids']) for e in enc.examples]


def test_collator_pads_per_batch():
    tok, (labels, label2id) = tokenizer(), labels_of('IOB2')
    data = encode_ner(toy_ner(), tok, label2id)
    batch = NERCollator(tok.pad_token_id)(data.examples)
    assert batch['input_ids'].shape == (4, max(data.lengths))
    assert batch['attention_mask'].sum(1).tolist() == data.lengths
    assert (batch['labels'][batch['attention_mask'] == 0] == IGNORE_INDEX).all()
    assert (batch['input_ids'][batch['attention_mask'] == 0] == tok.pad_token_id).all()
    assert NERCollator(0, pad_to_multiple_of=8)(data.examples[:1])['input_ids'].shape[1] % 8 == 0
    assert 'labels' not in NERCollator(0)([{'input_ids': [2, 3]}])
    with pytest.raises(ValueError, match='empty list'): NERCollator(0)([])


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), max_size=30), batch_size=st.integers(1, 8))
def test_forward_by_length_gives_results_back_in_input_order(lengths, batch_size):
    sequences = [[i] * n for i, n in enumerate(lengths)]   # a sequence's ids say which one it is
    batches = []
    def step(input_ids, attention_mask, rows):
        batches.append(rows)
        assert input_ids.shape == (len(rows), max(lengths[k] for k in rows))   # padded to the batch's own longest
        assert attention_mask.sum(1).tolist() == [lengths[k] for k in rows]
        return [(int(ids[0]), int(m.sum())) for ids, m in zip(input_ids, attention_mask)]
    assert forward_by_length(sequences, batch_size, -1, step) == list(enumerate(lengths))
    assert batches == length_sorted_chunks(lengths, batch_size)               # the same batches as ever
    in_order = [lengths[k] for rows in batches for k in rows]
    assert in_order == sorted(in_order) and all(len(rows) <= batch_size for rows in batches)


def test_forward_by_length_wants_one_result_per_row():
    with pytest.raises(ValueError): forward_by_length([[1, 2], [3]], 2, 0, lambda ids, mask, rows: [None])
    with pytest.raises(ValueError, match='batch_size must be a positive int'): forward_by_length([[1]], 0, 0, None)
    assert forward_by_length([], 4, 0, None) == []


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 99), max_size=20), max_length=st.integers(1, 25))
def test_truncate_ids_keeps_sep_last(ids, max_length):
    out = truncate_ids(ids, max_length, 100)
    assert len(out) == min(len(ids), max_length)
    if len(ids) <= max_length: assert out == ids
    else: assert out[:-1] == ids[:max_length - 1] and out[-1] == 100


# ---- windows and aggregation ----------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), max_size=40), max_length=st.integers(3, 24), data=st.data())
def test_windows_hold_whole_words_cover_everything_and_overlap_at_most_overlap(sizes, max_length, data):
    overlap = data.draw(st.integers(0, max_length - 3))
    budget = max_length - 2
    windows = plan_windows(sizes, max_length, overlap)
    clipped = [min(n, budget) for n in sizes]
    if not sizes: assert windows == []; return
    assert windows[0][0] == 0 and windows[-1][1] == len(sizes)
    for a, b in windows: assert a < b and sum(clipped[a:b]) <= budget
    for (a1, b1), (a2, b2) in zip(windows, windows[1:]):
        assert a1 < a2 <= b1 < b2                                      # forward, no gap
        assert sum(clipped[a2:b1]) <= overlap                          # shared tokens
    assert len(windows) <= len(sizes)


def test_window_settings_are_checked():
    for max_length, overlap in [(10, 8), (10, -1), (10, 1.5), (2, 0)]:
        with pytest.raises(ValueError, match='overlap < max_length - 2|max_length must be an int >= 3'):
            check_window(max_length, overlap)
    check_window(10, 7)


def test_aggregation():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.05, 0.9, 0.05], [0.1, 0.2, 0.7]])
    assert torch.equal(aggregate_pieces(p, 'first'), p[0])
    assert torch.allclose(aggregate_pieces(p, 'average'), p.mean(0))
    assert torch.equal(aggregate_pieces(p, 'max'), p[1])
    with pytest.raises(ValueError, match='aggregation'): aggregate_pieces(p, 'vote')


# ---- losses -----------------------------------------------------------------------------------------------------------

def test_focal_loss_is_cross_entropy_at_gamma_zero_and_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(3, 8, 5, generator=g), torch.randint(0, 5, (3, 8), generator=g)
    labels[0, :4] = IGNORE_INDEX
    w = torch.rand(5, generator=g) + 0.1
    ce = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    wce = F.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), weight=w, ignore_index=IGNORE_INDEX)
    assert torch.allclose(focal_loss(logits, labels, 0.0), ce, atol=1e-6)
    assert torch.allclose(focal_loss(logits, labels, 0.0, w), wce, atol=1e-6)
    assert torch.allclose(ner_loss(w)(logits, labels), wce, atol=1e-6)
    keep = labels != IGNORE_INDEX
    p = logits.softmax(-1)[keep].gather(1, labels[keep][:, None]).squeeze(1)
    naive = (-(1 - p) ** 2.5 * p.log() * w[labels[keep]]).sum() / w[labels[keep]].sum()
    assert torch.allclose(ner_loss(w, 2.5)(logits, labels), naive, atol=1e-6)
    assert ner_loss() is None
    with pytest.raises(ValueError, match='focal_gamma'): ner_loss(None, -1.0)


def test_balanced_class_weights():
    ds = NERDataset([{'input_ids': [0] * 7, 'labels': [IGNORE_INDEX, 0, 0, 0, 1, 2, IGNORE_INDEX]}], [], 7)
    w = balanced_class_weights(ds, 4)
    n = 5  # scored positions; 3 labels occur
    assert torch.allclose(w, torch.tensor([n / (3 * 3), n / 3, n / 3, 1.0]))


# ---- prediction and scores at the level of words --------------------------------------------------------------------

def tiny_config(tok, labels, **kw):
    return tiny.tiny_config(tok.vocab_size, labels=labels, **{'num_hidden_layers': 2, 'max_position_embeddings': 64, **kw})


@pytest.fixture(scope='module')
def trained():
    "A tiny tagger trained for a few seconds with `train_ner` (validation every 20 steps, best F1 kept)."
    tok = tokenizer()
    train, dev = load_sample('train')[:600], load_sample('dev')[:80]
    training = TrainingConfig(max_steps=80, batch_size=32, lr=3e-3, eval_every=20, metric_for_best='f1',
                              group_by_length=True, progress=False, device='cpu')
    model, history = train_ner(train, dev, tokenizer=tok, config=tiny_config(tok, ['O']), training=training)
    return tok, model, history, dev


def test_train_ner_keeps_the_best_checkpoint(trained):
    tok, model, history, dev = trained
    assert [r['step'] for r in history.eval] == [20, 40, 60, 80]
    best = max(history.eval, key=lambda r: r['f1'])
    assert history.best_metric == best['f1'] and history.best_step == best['step']
    assert evaluate_ner(model, tok, dev)['f1'] == pytest.approx(best['f1'], abs=1e-9)   # the best weights are back
    assert history.train[0]['loss'] > history.train[-1]['loss']
    assert model.config.id2label == dict(enumerate(label_list_for(load_sample('train')[:600])))
    assert {'loss', 'token_accuracy', 'precision', 'recall', 'f1', 'f1_default', 'f1_strict'} <= set(history.eval[0])


def test_evaluate_ner_equals_seqeval(trained):
    seqeval = importlib.import_module('seqeval.metrics')
    from seqeval.scheme import IOB2
    tok, model, _, dev = trained
    r = evaluate_ner(model, tok, dev)
    gold, pred = [s.tags for s in dev], r['predictions']
    assert [len(p) for p in pred] == [len(s) for s in dev]                      # one tag per word
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert r['f1'] == r['f1_default'] == pytest.approx(seqeval.f1_score(gold, pred), abs=1e-12)
        assert r['precision_default'] == pytest.approx(seqeval.precision_score(gold, pred), abs=1e-12)
        assert r['f1_strict'] == pytest.approx(seqeval.f1_score(gold, pred, mode='strict', scheme=IOB2), abs=1e-12)
    assert r['token_accuracy'] == pytest.approx(sum(g == p for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
                                               / sum(map(len, gold)))
    assert "mode='default'" in r['report'] and 'PER' in r['report']
    assert evaluate_ner(model, tok, dev, mode='strict')['f1'] == r['f1_strict']


def test_predictions_do_not_depend_on_batching_or_windows_that_fit(trained):
    tok, model, _, dev = trained
    pieces = word_pieces(tok, [s.tokens for s in dev[:20]])
    a = predict_word_probs(model, tok, pieces, batch_size=1)
    b = predict_word_probs(model, tok, pieces, batch_size=64)
    c = predict_word_probs(model, tok, pieces, max_length=64, overlap=20)       # every sentence fits one window
    for x, y, z in zip(a, b, c):
        assert torch.allclose(x, y, atol=1e-5) and torch.allclose(x, z, atol=1e-5)
    for agg in AGGREGATIONS:
        tags = predict_ner(model, tok, [s.tokens for s in dev[:5]], aggregation=agg)
        assert [len(t) for t in tags] == [len(s) for s in dev[:5]]


def test_train_ner_options_and_errors():
    tok = tokenizer()
    train, dev = toy_ner(), toy_ner()
    cfg = tiny_config(tok, ['O'], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    quick = TrainingConfig(max_steps=3, batch_size=4, lr=1e-3, progress=False, device='cpu')
    plain, _ = train_ner(train, dev, tokenizer=tok, config=cfg, training=quick)
    weighted, _ = train_ner(train, dev, tokenizer=tok, config=cfg, training=quick, class_weights='balanced')
    focal, _ = train_ner(train, dev, tokenizer=tok, config=cfg, training=quick, focal_gamma=2.0)
    w = plain.classifier.weight
    assert not torch.allclose(w, weighted.classifier.weight) and not torch.allclose(w, focal.classifier.weight)
    with pytest.raises(ValueError, match="metric_for_best='bleu'"):
        train_ner(train, dev, tokenizer=tok, config=cfg, training=TrainingConfig(metric_for_best='bleu', progress=False))
    with pytest.raises(ValueError, match=r'class_weights has shape \(3,\), expected \(7,\)'):
        train_ner(train, dev, tokenizer=tok, config=cfg, training=quick, class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="dev sentence 0: word 0 has the label 'B-DATE'"):
        train_ner(train, [TaggedSentence(['Monday'], ['B-DATE'])], tokenizer=tok, config=cfg, training=quick)
    with pytest.raises(TypeError, match='encoder must be a BertModel'):
        train_ner(train, dev, tokenizer=tok, encoder=torch.nn.Linear(2, 2), training=quick)


def test_train_ner_starts_from_the_encoder():
    tok = tokenizer()
    seed_everything(1)
    mlm = BertForMaskedLM(tiny_config(tok, ['O']))
    frozen = TrainingConfig(max_steps=1, batch_size=4, lr=1e-12, progress=False, device='cpu', max_grad_norm=None)
    model, _ = train_ner(toy_ner(), toy_ner(), tokenizer=tok, encoder=mlm, training=frozen)
    ours, theirs = model.bert.state_dict(), mlm.bert.state_dict()
    assert ours.keys() == theirs.keys()
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-6
    assert model.config.hidden_size == mlm.config.hidden_size and model.config.num_labels == 7
    model2, _ = train_ner(toy_ner(), toy_ner(), tokenizer=tok, encoder=mlm.bert, training=frozen)           # a BertModel also works
    assert torch.allclose(model2.bert.embeddings.word_embeddings.weight, mlm.bert.embeddings.word_embeddings.weight, atol=1e-6)
    pooled = BertModel(tiny_config(tok, ['O']))                                                   # its pooler is left behind
    model3, _ = train_ner(toy_ner(), toy_ner(), tokenizer=tok, encoder=pooled, training=frozen)
    assert torch.allclose(model3.bert.encoder.layer[0].attention.self.query.weight,
                          pooled.encoder.layer[0].attention.self.query.weight, atol=1e-6)
    with pytest.raises(ValueError, match="the encoder's weights do not fit the config"):
        train_ner(toy_ner(), toy_ner(), tokenizer=tok, encoder=mlm, config=tiny_config(tok, ['O'], hidden_size=16), training=frozen)


def test_train_ner_returns_trained_and_takes_keywords():
    "train_ner(train, dev, *, tokenizer=, encoder=, training=, ...) -> Trained(model, history)."
    tok = tokenizer()
    cfg = tiny_config(tok, ['O'])
    quick = TrainingConfig(max_steps=2, batch_size=4, progress=False, device='cpu')
    trained = train_ner(toy_ner(), toy_ner(), tokenizer=tok, config=cfg, training=quick)
    assert isinstance(trained, Trained) and isinstance(trained, tuple) and len(trained) == 2
    assert isinstance(trained.model, BertForTokenClassification) and isinstance(trained.history, History)
    model, history = trained                                       # unpacks as before
    assert model is trained.model and history is trained.history and history.eval
    with pytest.raises(TypeError, match='positional'): train_ner(toy_ner(), toy_ner(), tok, config=cfg, training=quick)
    with pytest.raises(TypeError, match='train_ner needs a tokenizer: pass tokenizer='):
        train_ner(toy_ner(), toy_ner(), config=cfg, training=quick)
    with pytest.raises(TypeError, match='train_ner needs a tokenizer'):
        train_ner(toy_ner(), toy_ner(), encoder=BertModel(cfg), training=quick)   # a module brings no tokenizer
    defaults = train_ner(toy_ner()[:4], toy_ner()[:2], tokenizer=tok, config=cfg,   # training=None: TrainingConfig()
                         training=None).history
    assert len(defaults.eval) == 1 and defaults.eval[0]['epoch'] == 1       # one epoch, evaluated at its end


def test_train_ner_from_a_folder(tmp_path):
    "encoder= a checkpoint folder: the encoder part of whatever it holds, and its tokenizer when none is given."
    from bert_book.pretrained import save_pretrained
    tok = tokenizer()
    seed_everything(2)
    mlm = BertForMaskedLM(tiny_config(tok, ['O']))
    folder = save_pretrained(mlm, tok, tmp_path / 'mlm')
    frozen = TrainingConfig(max_steps=1, batch_size=4, lr=1e-12, progress=False, device='cpu', max_grad_norm=None)
    model, _ = train_ner(toy_ner(), toy_ner(), encoder=folder, training=frozen)    # the folder's tokenizer
    ours, theirs = model.bert.state_dict(), mlm.bert.state_dict()
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-6
    tagger_folder = save_pretrained(model, tok, tmp_path / 'tagger')             # a tagger: its encoder, a new head
    again, _ = train_ner(toy_ner(), toy_ner(), tokenizer=tok, encoder=str(tagger_folder), training=frozen,
                         label_list=['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC', 'B-ORG', 'I-ORG', 'B-MISC', 'I-MISC'])
    assert again.config.num_labels == 9 and torch.allclose(again.bert.encoder.layer[1].output.dense.weight,
                                                          mlm.bert.encoder.layer[1].output.dense.weight, atol=1e-6)
    bare = tmp_path / 'no-tokenizer'
    save_pretrained(mlm, None, bare)
    with pytest.raises(FileNotFoundError, match='pass tokenizer='): train_ner(toy_ner(), toy_ner(), encoder=bare, training=frozen)
    assert train_ner(toy_ner(), toy_ner(), tokenizer=tok, encoder=bare, training=frozen).model.config.vocab_size == tok.vocab_size
    with pytest.raises(FileNotFoundError, match='is not a folder'):
        train_ner(toy_ner(), toy_ner(), tokenizer=tok, encoder=tmp_path / 'missing', training=frozen)


def test_every_subword_labelling_refuses_average_and_max():
    "Averaging a word's pieces trained with continuation tags turns a 3-piece B-X into I-X: refused, with the reason."
    from bert_book.token_classification import NERPipeline
    tok = tokenizer()
    cfg = tiny_config(tok, ['O'])
    quick = TrainingConfig(max_steps=1, batch_size=4, lr=1e-3, progress=False, device='cpu')
    for agg in ('average', 'max'):
        with pytest.raises(ValueError, match='label_all_subwords=True.*first sub-word'):
            train_ner(toy_ner(), toy_ner(), tokenizer=tok, config=cfg, training=quick, label_all_subwords=True, aggregation=agg)
    model, _ = train_ner(toy_ner(), toy_ner(), tokenizer=tok, config=cfg, training=quick, label_all_subwords=True)
    assert model.config.extra['label_all_subwords'] is True      # recorded, and saved with the config
    for agg in ('average', 'max'):
        with pytest.raises(ValueError, match='label_all_subwords'):
            predict_ner(model, tok, [['Paris']], aggregation=agg)
        with pytest.raises(ValueError, match='label_all_subwords'):
            NERPipeline(model, tok, aggregation=agg, device='cpu')
    assert len(predict_ner(model, tok, [['Paris', 'is', 'big']])[0]) == 3   # 'first' still works
