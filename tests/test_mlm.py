"""The masked-LM recipe from outside: tokenizing and packing a corpus, the fixed evaluation mask, the unigram baseline,
pre-training (one text per example and packed), and fill-mask with its errors."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from bert_book.data import load_corpus
from bert_book.masking import MLMCollator
from bert_book.mlm import (compact_config, evaluate_mlm, fill_mask, fixed_eval_batches, pack_examples, pretrain_mlm,
                           tokenize_corpus, unigram_perplexity)
from bert_book.tokenizer import train_wordpiece
from bert_book.heads import BertForMaskedLM
from bert_book.training import History, Trained, TrainingConfig

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope='module')
def corpus():
    return load_corpus()[:600]


@pytest.fixture(scope='module')
def tok(corpus):
    return train_wordpiece(corpus, vocab_size=800, model_max_length=64)


def test_tokenize_corpus(corpus, tok):
    ex = tokenize_corpus(corpus[:20] + ['', '   '], tok, word_ids=True)
    assert len(ex) == 20                                                  # blank texts skipped
    for e in ex:
        assert e['input_ids'][0] == tok.cls_token_id and e['input_ids'][-1] == tok.sep_token_id
        assert len(e['word_ids']) == len(e['input_ids']) and e['word_ids'][0] == -1 == e['word_ids'][-1]
    assert max(len(e['input_ids']) for e in tokenize_corpus([' '.join(corpus[:10])], tok, max_length=16)) == 16
    with pytest.raises(TypeError, match='not one str'): tokenize_corpus('a text', tok)
    with pytest.raises(TypeError, match=r'texts\[1\] is int'): tokenize_corpus(['ok', 3], tok)
    with pytest.raises(ValueError, match='every text is empty'): tokenize_corpus(['', ' '], tok)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=0, max_size=30), st.integers(3, 50))
def test_packing_keeps_every_token_in_order(body_lengths, max_length):
    "Packing keeps each sentence whole (truncated to fit), in order, with one [CLS] per example and one [SEP] per sentence."
    CLS, SEP = 1, 2
    examples, n = [], 10
    for k in body_lengths:
        examples.append({'input_ids': [CLS] + list(range(n, n + k)) + [SEP], 'word_ids': [-1] + list(range(k)) + [-1]})
        n += k
    packed = pack_examples(examples, max_length)
    assert all(len(p['input_ids']) <= max_length and p['input_ids'][0] == CLS for p in packed)
    bodies = [[i for i in p['input_ids'][1:] if i != SEP] for p in packed]
    assert sum(bodies, []) == sum(([i for i in e['input_ids'][1:-1]][:max_length - 2] for e in examples), [])
    assert sum(p['input_ids'].count(SEP) for p in packed) == len(examples)
    for p in packed:                                                     # word ids: increasing, -1 on specials
        words = [w for i, w in zip(p['input_ids'], p['word_ids']) if i not in (CLS, SEP)]
        assert words == sorted(words) and all(w == -1 for i, w in zip(p['input_ids'], p['word_ids']) if i in (CLS, SEP))


def test_packing_errors():
    with pytest.raises(ValueError, match='at least 3'): pack_examples([{'input_ids': [1, 2]}], max_length=2)
    with pytest.raises(ValueError, match=r'examples\[0\] has 1 tokens'): pack_examples([{'input_ids': [1]}])
    assert pack_examples([]) == []


def test_fixed_mask_and_unigram_baseline(corpus, tok):
    ex = tokenize_corpus(corpus, tok)
    collator = MLMCollator.from_tokenizer(tok, seed=0)
    a, b = fixed_eval_batches(ex[-50:], collator, batch_size=16), fixed_eval_batches(ex[-50:], collator, batch_size=16)
    assert all(torch.equal(x['labels'], y['labels']) for x, y in zip(a, b))
    base = unigram_perplexity(ex[:-50], a, tok.vocab_size)
    assert 1 < base < tok.vocab_size


@pytest.mark.parametrize('pack', [False, True])
def test_pretraining_beats_the_unigram_baseline(corpus, tok, pack):
    torch.manual_seed(0)
    training = TrainingConfig(num_epochs=3, batch_size=2 if pack else 16, lr=3e-3, progress=False, device='cpu',
                              group_by_length=True)
    trained = pretrain_mlm(corpus[:-60], corpus[-60:], tokenizer=tok, config=compact_config(tok.vocab_size, **TINY),
                           training=training, pack=pack)
    assert isinstance(trained, Trained) and isinstance(trained.history, History)
    model, history = trained
    assert model is trained.model and isinstance(model, BertForMaskedLM)
    ex = tokenize_corpus(corpus, tok)
    batches = fixed_eval_batches(tokenize_corpus(corpus[-60:], tok), MLMCollator.from_tokenizer(tok, seed=0))
    scores = evaluate_mlm(model, batches)
    assert scores['perplexity'] == pytest.approx(math.exp(scores['loss']))
    assert scores['perplexity'] < unigram_perplexity(ex[:-60], batches, tok.vocab_size)
    assert history.eval and history.best_metric <= history.eval[0]['loss']


def test_config_must_hold_the_vocabulary(corpus, tok):
    with pytest.raises(ValueError, match='smaller than the tokenizer'):
        pretrain_mlm(corpus, tokenizer=tok, config=compact_config(10, **TINY), training=TrainingConfig(max_steps=1, progress=False))


def test_pretrain_mlm_shape_and_errors(corpus, tok):
    "pretrain_mlm(train, dev=None, *, tokenizer=...): the tokenizer is a keyword, and it is required."
    with pytest.raises(TypeError, match='needs tokenizer='): pretrain_mlm(corpus[:50])
    with pytest.raises(TypeError, match='the second argument is the validation texts'): pretrain_mlm(corpus[:50], tok)
    with pytest.raises(TypeError, match='positional'): pretrain_mlm(corpus[:50], None, tok)
    with pytest.raises(TypeError, match=r'dev\[0\] is int'): pretrain_mlm(corpus[:50], [1], tokenizer=tok)
    quick = TrainingConfig(max_steps=1, batch_size=4, progress=False, device='cpu')
    model, history = pretrain_mlm(corpus[:40], tokenizer=tok, config=compact_config(tok.vocab_size, **TINY), training=quick)
    assert history.eval and history.eval[-1]['step'] == 1      # dev=None: validated on a held-out part of train


def test_fill_mask_output_and_errors(corpus, tok):
    torch.manual_seed(0)
    from bert_book.heads import BertForMaskedLM
    model = BertForMaskedLM(compact_config(tok.vocab_size, **TINY))
    out = fill_mask(model, tok, 'Talks resumed in [MASK] on [MASK].', top_k=3)
    assert len(out) == 2 and all(len(c) == 3 for c in out)
    specials = set(tok.all_special_ids)
    for cands in out:
        scores = [c['score'] for c in cands]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert not {c['token_id'] for c in cands} & specials
    assert model.training                                                 # the model's mode is restored
    with pytest.raises(ValueError, match=r'no \[MASK\] in the text'): fill_mask(model, tok, 'no mask')
    with pytest.raises(ValueError, match='positive int'): fill_mask(model, tok, '[MASK]', top_k=0)
    with pytest.raises(TypeError, match='must be a str'): fill_mask(model, tok, ['[MASK]'])
    with pytest.raises(ValueError, match="more than the model's 64"): fill_mask(model, tok, 'word ' * 80 + '[MASK]')
