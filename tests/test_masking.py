"""bert_book.masking seen from outside: the 15/80/10/10 shares, specials and padding, determinism, whole words,
the collator, and clear errors."""
import importlib
import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

from bert_book.masking import (IGNORE_INDEX, MLMCollator, mask_tokens, select_positions, special_tokens_mask,
                               word_starts)

V, PAD, UNK, CLS, SEP, MASK = 30522, 0, 100, 101, 102, 103
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
KW = dict(mask_token_id=MASK, vocab_size=V, special_token_ids=SPECIALS)


def batch(B, T, seed=0, vocab_size=V):
    "(B, T) random word pieces framed by [CLS] ... [SEP], of random lengths >= 3, padded with [PAD]."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(104, vocab_size, (B, T), generator=g)
    lengths = torch.randint(3, T + 1, (B,), generator=g)
    ids[torch.arange(T) >= lengths[:, None]] = PAD
    ids[:, 0] = CLS
    ids[torch.arange(B), lengths - 1] = SEP
    return ids


def is_special(ids):
    return torch.isin(ids, torch.tensor(SPECIALS))


def within(measured, expected, n, sigmas=5):
    "A binomial share measured on n trials is within `sigmas` standard deviations of `expected`."
    return abs(measured - expected) <= sigmas * math.sqrt(expected * (1 - expected) / n)


# --- the shares ---------------------------------------------------------------------------------------------------

def test_proportions_15_80_10_10():
    ids = batch(4000, 128, seed=1)
    masked, labels = mask_tokens(ids, generator=torch.Generator().manual_seed(0), **KW)
    chosen = labels != IGNORE_INDEX
    n_cand, n = (~is_special(ids)).sum().item(), chosen.sum().item()
    R = V - len(SPECIALS)                                       # a random draw may give the original back: 1/R
    m, o = masked[chosen], ids[chosen]
    assert n_cand > 200_000
    assert within(n / n_cand, 0.15, n_cand)
    assert within((m == MASK).sum().item() / n, 0.8, n)
    assert within(((m != MASK) & (m != o)).sum().item() / n, 0.1 * (1 - 1 / R), n)
    assert within((m == o).sum().item() / n, 0.1 + 0.1 / R, n)


def test_other_shares_are_honoured():
    ids = batch(2000, 128, seed=2)
    masked, labels = mask_tokens(ids, mlm_probability=0.3, mask_replace_prob=0.5, random_replace_prob=0.5,
                                 generator=torch.Generator().manual_seed(1), **KW)
    chosen = labels != IGNORE_INDEX
    n_cand, n = (~is_special(ids)).sum().item(), chosen.sum().item()
    assert within(n / n_cand, 0.3, n_cand)
    assert within((masked[chosen] == MASK).sum().item() / n, 0.5, n)
    assert (masked[chosen] == ids[chosen]).float().mean() < 0.01  # no "unchanged" branch left (but chance repeats)


def test_exact_count_per_sequence():
    ids = batch(300, 64, seed=3)
    _, labels = mask_tokens(ids, exact=True, generator=torch.Generator().manual_seed(0), **KW)
    n = (~is_special(ids)).sum(-1)
    expected = torch.where(n > 0, (n * 0.15 + 0.5).floor().clamp(min=1), 0).long()
    assert torch.equal((labels != IGNORE_INDEX).sum(-1), expected)


# --- the rules that hold on every draw ----------------------------------------------------------------------------

def test_specials_and_padding_never_chosen_and_never_drawn():
    ids = batch(2000, 64, seed=4)
    before = ids.clone()
    masked, labels = mask_tokens(ids, mlm_probability=0.9, mask_replace_prob=0.0, random_replace_prob=1.0,
                                 generator=torch.Generator().manual_seed(0), **KW)
    chosen = labels != IGNORE_INDEX
    assert chosen.sum() > 50_000
    assert not (chosen & is_special(ids)).any()
    assert not (chosen & (ids == PAD)).any()
    assert not is_special(masked[chosen]).any()               # every chosen token was replaced: none by a special
    assert torch.equal(masked[~chosen], ids[~chosen])          # unchosen positions untouched
    assert (labels[~chosen] == IGNORE_INDEX).all() and torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(ids, before)                            # the input is not modified


def test_tiny_vocabulary_random_ids_are_never_special():
    # 5 specials out of 8 ids: a draw over the whole vocabulary would hit a special 5 times in 8
    ids = torch.tensor([[2, 5, 6, 7, 5, 6, 7, 3, 0, 0]] * 3000)
    masked, labels = mask_tokens(ids, mask_token_id=4, vocab_size=8, special_token_ids=[0, 1, 2, 3],
                                 mask_replace_prob=0.0, random_replace_prob=1.0, generator=torch.Generator().manual_seed(0))
    chosen = labels != IGNORE_INDEX
    assert chosen.sum() > 2000
    assert set(masked[chosen].unique().tolist()) == {5, 6, 7}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.lists(st.integers(0, 19), min_size=1, max_size=30), min_size=1, max_size=6),
       specials=st.sets(st.integers(0, 19), max_size=8),
       p=st.floats(0.01, 0.99), m=st.floats(0, 1), seed=st.integers(0, 2**31), exact=st.booleans())
def test_invariants_hold_for_any_input(rows, specials, p, m, seed, exact):
    T = max(map(len, rows))
    mask_id = 19
    specials = specials | {0}
    if len(specials | {mask_id}) == 20: specials.discard(1)          # keep one id for random replacements
    ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    before = ids.clone()
    r = (1 - m) / 2
    masked, labels = mask_tokens(ids, mask_token_id=mask_id, vocab_size=20, special_token_ids=sorted(specials),
                                 mlm_probability=p, mask_replace_prob=m, random_replace_prob=r, exact=exact,
                                 generator=torch.Generator().manual_seed(seed))
    all_specials = torch.tensor(sorted(specials | {mask_id}))
    chosen = labels != IGNORE_INDEX
    assert masked.shape == labels.shape == ids.shape
    assert torch.equal(ids, before)
    assert not (chosen & torch.isin(ids, all_specials)).any()
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    changed = chosen & (masked != mask_id)
    assert not torch.isin(masked[changed], all_specials).any()
    if exact:
        n = (~torch.isin(ids, all_specials)).sum(-1)
        assert torch.equal(chosen.sum(-1), torch.where(n > 0, (n * p + 0.5).floor().clamp(min=1), 0).long())


# --- determinism and devices --------------------------------------------------------------------------------------

def test_same_seed_same_mask_other_seed_other_mask():
    ids = batch(64, 64, seed=5)
    a = mask_tokens(ids, generator=torch.Generator().manual_seed(7), **KW)
    b = mask_tokens(ids, generator=torch.Generator().manual_seed(7), **KW)
    c = mask_tokens(ids, generator=torch.Generator().manual_seed(8), **KW)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_int32_and_single_sequence_inputs():
    ids = batch(1, 50, seed=6)[0]
    m32, l32 = mask_tokens(ids.int(), generator=torch.Generator().manual_seed(0), **KW)
    m64, l64 = mask_tokens(ids, generator=torch.Generator().manual_seed(0), **KW)
    assert m32.dtype == l32.dtype == torch.long and m32.shape == ids.shape
    assert torch.equal(m32, m64) and torch.equal(l32, l64)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cpu_generator_gives_the_same_mask_on_cuda():
    ids = batch(64, 64, seed=7)
    cpu = mask_tokens(ids, generator=torch.Generator().manual_seed(3), **KW)
    gpu = mask_tokens(ids.cuda(), generator=torch.Generator().manual_seed(3), **KW)
    assert gpu[0].is_cuda and gpu[1].is_cuda
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())
    m, l = mask_tokens(ids.cuda(), generator=torch.Generator('cuda').manual_seed(3), **KW)
    assert not ((l != IGNORE_INDEX) & is_special(ids).cuda()).any()


# --- whole words --------------------------------------------------------------------------------------------------

def random_word_ids(ids, seed):
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand(ids.shape, generator=g) < 0.4
    return (starts.cumsum(-1)).masked_fill(is_special(ids), -1)


def test_whole_words_are_all_or_nothing_and_keep_the_share():
    ids = batch(2000, 128, seed=8)
    wid = random_word_ids(ids, seed=9)
    _, labels = mask_tokens(ids, word_ids=wid, generator=torch.Generator().manual_seed(0), **KW)
    chosen = labels != IGNORE_INDEX
    word_no = (word_starts(wid).flatten().cumsum(0) - 1).reshape(wid.shape)[wid >= 0]
    sizes = torch.bincount(word_no)
    hits = torch.bincount(word_no, weights=chosen[wid >= 0].double()).long()
    assert ((hits == 0) | (hits == sizes)).all()
    assert (sizes > 1).sum() > 10_000                               # plenty of multi-piece words were tested
    assert within((hits > 0).double().mean().item(), 0.15, len(sizes))
    assert not (chosen & is_special(ids)).any()


def test_whole_words_from_lists_with_none_and_pairs_restarting_at_zero():
    # [CLS] w0 w0 w1 [SEP] w0 w0 [SEP] [PAD]: the second sentence numbers its words from 0 again
    ids = torch.tensor([[CLS, 2000, 2001, 2002, SEP, 3000, 3001, SEP, PAD]] * 4000)
    words = [[None, 0, 0, 1, None, 0, 0, None, None]] * 4000
    _, labels = mask_tokens(ids, word_ids=words, mlm_probability=0.5, generator=torch.Generator().manual_seed(0), **KW)
    chosen = labels != IGNORE_INDEX
    assert torch.equal(chosen[:, 1], chosen[:, 2]) and torch.equal(chosen[:, 5], chosen[:, 6])
    assert not torch.equal(chosen[:, 1], chosen[:, 5])              # word 0 of A and word 0 of B are two words
    assert not chosen[:, [0, 4, 7, 8]].any()
    assert within(chosen[:, 1].double().mean().item(), 0.5, 4000)


def test_word_starts():
    assert word_starts(torch.tensor([-1, 0, 0, 1, 2, 2, -1, 0, -1])).tolist() == \
        [False, True, False, True, True, False, False, True, False]


def test_select_positions_respects_candidates():
    cand = torch.rand(50, 40, generator=torch.Generator().manual_seed(0)) < 0.5
    sel = select_positions(cand, 0.5, generator=torch.Generator().manual_seed(1))
    assert not (sel & ~cand).any() and sel.any()
    with pytest.raises(ValueError, match='candidates must be a bool tensor'):
        select_positions(cand.long())
    with pytest.raises(ValueError, match=r'word_ids has shape \(50, 3\) but input_ids has shape \(50, 40\)'):
        select_positions(cand, word_ids=torch.zeros(50, 3, dtype=torch.long))


# --- the collator -------------------------------------------------------------------------------------------------

def collator(**kw):
    return MLMCollator(pad_token_id=PAD, mask_token_id=MASK, vocab_size=V, special_token_ids=[UNK, CLS, SEP], **kw)


def examples(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 40, (n,), generator=g).tolist()
    return [[CLS] + torch.randint(104, V, (k - 2,), generator=g).tolist() + [SEP] for k in lengths]


def test_collator_pads_per_batch_and_builds_masks():
    exs = examples()
    out = collator()(exs)
    longest = max(map(len, exs))
    assert sorted(out) == ['attention_mask', 'input_ids', 'labels', 'token_type_ids']
    assert all(v.shape == (len(exs), longest) and v.dtype == torch.long for v in out.values())
    assert out['attention_mask'].sum(1).tolist() == [len(e) for e in exs]
    assert (out['input_ids'][out['attention_mask'] == 0] == PAD).all()
    assert not (out['labels'][out['attention_mask'] == 0] != IGNORE_INDEX).any()
    assert (out['token_type_ids'] == 0).all()
    short = collator()(exs[:1])
    assert short['input_ids'].shape == (1, len(exs[0]))              # per batch, not a global maximum


def test_collator_pad_to_multiple_of_8_and_max_length():
    exs = [[CLS, 2000, SEP], [CLS] + [2001] * 9 + [SEP]]            # lengths 3 and 11
    assert collator(pad_to_multiple_of=8)(exs)['input_ids'].shape == (2, 16)
    assert collator(pad_to_multiple_of=8, max_length=12)(exs)['input_ids'].shape == (2, 12)
    with pytest.raises(ValueError, match=r'example 1 has 11 tokens, more than max_length=10'):
        collator(max_length=10)(exs)


def test_collator_masks_differently_on_successive_calls_but_repeats_with_its_seed():
    exs = examples(16)
    c = collator(seed=3)
    first, second = c(exs), c(exs)
    assert not torch.equal(first['labels'], second['labels'])
    again = collator(seed=3)
    assert torch.equal(again(exs)['labels'], first['labels']) and torch.equal(again(exs)['labels'], second['labels'])


def test_with_seed_fixes_the_evaluation_mask():
    exs = examples(16)
    c = collator(seed=3)
    state = c.generator.get_state()
    ev = c.with_seed(11)
    a, b = ev(exs), ev(exs)
    assert torch.equal(a['labels'], b['labels']) and torch.equal(a['input_ids'], b['input_ids'])
    assert torch.equal(c.generator.get_state(), state)
    assert not torch.equal(c(exs)['labels'], c(exs)['labels'])      # the training collator stays dynamic


def test_collator_generator_state_restores_a_run():
    exs = examples(16)
    c = collator(seed=5)
    c(exs)
    state = c.generator.get_state()
    nxt = c(exs)
    c.generator.set_state(state)
    assert torch.equal(c(exs)['labels'], nxt['labels'])
    clone = pickle.loads(pickle.dumps(c))                           # picklable for DataLoader workers
    assert torch.equal(clone(exs)['labels'], c(exs)['labels'])


def test_collator_accepts_dicts_tensors_arrays_and_token_types():
    exs = [{'input_ids': [CLS, 2000, SEP, 2001, SEP], 'token_type_ids': [0, 0, 0, 1, 1], 'attention_mask': [1] * 5},
           torch.tensor([CLS, 2002, SEP]), np.array([CLS, 2003, 2004, SEP])]
    out = collator()(exs)
    assert out['token_type_ids'].tolist() == [[0, 0, 0, 1, 1], [0] * 5, [0] * 5]
    assert out['attention_mask'].tolist() == [[1] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]


def test_collator_whole_word_mask():
    exs = [{'input_ids': [CLS, 2000, 2001, 2002, 2003, SEP], 'word_ids': [None, 0, 0, 0, 1, None]}] * 2000
    out = collator(whole_word_mask=True, mlm_probability=0.5)(exs)
    chosen = out['labels'] != IGNORE_INDEX
    assert (chosen[:, 1:4].all(1) | ~chosen[:, 1:4].any(1)).all()
    assert within(chosen[:, 1].double().mean().item(), 0.5, 2000)
    with pytest.raises(ValueError, match=r"example 0 has no 'word_ids'"):
        collator(whole_word_mask=True)([[CLS, 2000, SEP]])
    with pytest.raises(ValueError, match=r'example 0: word_ids has 2 entries but input_ids has 3'):
        collator(whole_word_mask=True)([{'input_ids': [CLS, 2000, SEP], 'word_ids': [None, 0]}])


def test_collator_in_dataloader_workers_draw_different_masks():
    # every example identical: with workers sharing one generator state, batches would repeat
    data = [[CLS] + list(range(2000, 2060)) + [SEP]] * 64
    loader = torch.utils.data.DataLoader(data, batch_size=16, num_workers=2, collate_fn=collator(seed=0),
                                         generator=torch.Generator().manual_seed(0))
    labels = [b['labels'] for b in loader]
    assert len(labels) == 4
    assert not torch.equal(labels[0], labels[1])                   # the two workers' first batches differ


def test_from_tokenizer_duck_typing_and_transformers():
    stand_in = SimpleNamespace(pad_token_id=0, mask_token_id=4, vocab_size=50, all_special_ids=[0, 1, 2, 3, 4])
    c = MLMCollator.from_tokenizer(stand_in, seed=1)
    assert (c.pad_token_id, c.mask_token_id, c.vocab_size, c.special_token_ids) == (0, 4, 50, (0, 1, 2, 3, 4))
    assert c.seed == 1
    transformers = importlib.import_module('transformers')
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'a', 'b', '##c'])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token='[UNK]'))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token='[PAD]', unk_token='[UNK]',
                                               cls_token='[CLS]', sep_token='[SEP]', mask_token='[MASK]')
    c = MLMCollator.from_tokenizer(tok)
    assert (c.pad_token_id, c.mask_token_id, c.vocab_size, c.special_token_ids) == (0, 4, 8, (0, 1, 2, 3, 4))
    out = c([tok('a b bc')['input_ids']] * 50)
    assert set(out['input_ids'].unique().tolist()) <= set(range(8))


def test_from_the_books_tokenizer_with_whole_words():
    from bert_book.tokenizer import train_wordpiece
    texts = ['the riverbank and the unfamiliar tokenizer', 'a tokenizer splits unfamiliar words'] * 5
    tok = train_wordpiece(texts, vocab_size=60, min_frequency=1)
    c = MLMCollator.from_tokenizer(tok, whole_word_mask=True, mlm_probability=0.5, seed=0)
    assert c.special_token_ids == tuple(sorted(tok.all_special_ids)) and c.pad_token_id == tok.pad_token_id
    encs = [tok(t, return_word_ids=True) for t in texts] * 40
    out = c(encs)
    chosen = out['labels'] != IGNORE_INDEX
    for b, e in enumerate(encs):
        w = torch.tensor([-1 if v is None else v for v in e['word_ids']])
        for v in set(w.tolist()) - {-1}:
            got = chosen[b, :len(w)][w == v]
            assert got.all() or not got.any()
    assert any(len(set(e['word_ids'])) < len(e['word_ids']) - 1 for e in encs[:2])   # some words have several pieces


# --- errors -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs, message', [
    (dict(mlm_probability=0.0), r'mlm_probability must be in \(0, 1\), got 0'),
    (dict(mlm_probability=1.0), r'mlm_probability must be in \(0, 1\), got 1'),
    (dict(mlm_probability=-0.1), r'mlm_probability must be in \(0, 1\)'),
    (dict(mlm_probability='0.15'), r'mlm_probability must be a number'),
    (dict(mask_replace_prob=1.2), r'mask_replace_prob must be in \[0, 1\]'),
    (dict(mask_replace_prob=0.8, random_replace_prob=0.3), r'must be at most 1'),
    (dict(mask_token_id=V), r'mask_token_id=30522 is outside the vocabulary'),
    (dict(mask_token_id=-1), r'mask_token_id=-1 is outside the vocabulary'),
    (dict(mask_token_id=1.0), r'mask_token_id must be an int'),
    (dict(special_token_ids=[0, V + 5]), r'special_token_ids\[1\]=30527 is outside'),
    (dict(vocab_size=0), r'vocab_size must be a positive int'),
    (dict(generator='seed'), r'generator must be a torch.Generator'),
])
def test_mask_tokens_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mask_tokens(batch(2, 8), **{**KW, **kwargs})


def test_mask_tokens_bad_inputs():
    ids = batch(2, 8)
    with pytest.raises(ValueError, match=r'input_ids must be an integer tensor, got dtype torch.float32'):
        mask_tokens(ids.float(), **KW)
    with pytest.raises(ValueError, match=r'input_ids must be an integer tensor, got dtype torch.bool'):
        mask_tokens(ids > 0, **KW)
    with pytest.raises(ValueError, match=r'input_ids must be a torch tensor'):
        mask_tokens(ids.tolist(), **KW)
    with pytest.raises(ValueError, match=r'input_ids holds id 30522, outside the vocabulary'):
        mask_tokens(torch.tensor([[CLS, V, SEP]]), **KW)
    with pytest.raises(ValueError, match=r'word_ids has shape \(2, 7\) but input_ids has shape \(2, 8\)'):
        mask_tokens(ids, word_ids=torch.zeros(2, 7, dtype=torch.long), **KW)
    with pytest.raises(ValueError, match=r'word_ids must be ints or None'):
        mask_tokens(ids, word_ids=[[0] * 8, [0] * 7], **KW)
    with pytest.raises(ValueError, match=r'none is left for random replacements'):
        mask_tokens(torch.tensor([[0, 1]]), mask_token_id=2, vocab_size=3, special_token_ids=[0, 1])


def test_collator_bad_arguments_and_examples():
    with pytest.raises(ValueError, match=r'pad_token_id=40000 is outside'):
        MLMCollator(pad_token_id=40000, mask_token_id=MASK, vocab_size=V)
    with pytest.raises(ValueError, match=r'mlm_probability must be in \(0, 1\), got 1.5'):
        collator(mlm_probability=1.5)
    with pytest.raises(ValueError, match=r'max_length must be a positive int'):
        collator(max_length=0)
    c = collator()
    with pytest.raises(ValueError, match=r'cannot collate an empty list'):
        c([])
    with pytest.raises(ValueError, match=r'example 1 is empty'):
        c([[CLS, SEP], []])
    with pytest.raises(ValueError, match=r'example 0: input_ids must hold integers'):
        c([[1.5, 2.5]])
    with pytest.raises(ValueError, match=r'example 1: input_ids must be a list of ints'):
        c([[CLS, SEP], [CLS, None, SEP]])
    with pytest.raises(ValueError, match=r'example 0: input_ids must be 1-D'):
        c([[[CLS, SEP], [CLS, SEP]]])
    with pytest.raises(ValueError, match=r'example 2: token_type_ids must hold integers'):
        c([{'input_ids': [CLS, SEP]}, {'input_ids': [CLS, SEP], 'token_type_ids': [0, 0]},
           {'input_ids': [CLS, SEP], 'token_type_ids': [0, 0.5]}])
    with pytest.raises(ValueError, match=r'example 1: id 30522 is outside the vocabulary'):
        c([[CLS, SEP], [CLS, V, SEP]])
    with pytest.raises(ValueError, match=r"example 0 has no 'input_ids'"):
        c([{'ids': [CLS, SEP]}])
    with pytest.raises(ValueError, match=r'example 0: token_type_ids has 1 entries but input_ids has 2'):
        c([{'input_ids': [CLS, SEP], 'token_type_ids': [0]}])
    with pytest.raises(ValueError, match=r'from_tokenizer needs'):
        MLMCollator.from_tokenizer(object())
    with pytest.raises(ValueError, match=r'the tokenizer has no mask token'):
        MLMCollator.from_tokenizer(SimpleNamespace(pad_token_id=0, mask_token_id=None, vocab_size=9, all_special_ids=[0]))


def test_special_tokens_mask():
    ids = torch.tensor([[CLS, 2000, SEP, PAD]])
    assert special_tokens_mask(ids, SPECIALS).tolist() == [[True, False, True, True]]
