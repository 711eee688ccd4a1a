"""Unpadding (chapter 4) against transformers' BERT on random padding patterns: left and right padding, holes, rows
that are [CLS] alone, and masks whose first position is padding. With the same weights and `unpad` on, the book's
`BertModel` gives transformers' `last_hidden_state` at every real token and its `pooler_output` for every row, and the
sequence classifier (whose last block computes [CLS] only) gives its logits for every row."""
import importlib, warnings

import pytest
import torch

hypothesis = pytest.importorskip('hypothesis')
from hypothesis import given, settings, strategies as st

from bert_book.core import BertConfig
from bert_book.heads import BertForSequenceClassification

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    transformers = importlib.import_module('transformers')

TOL = 1e-5
CONFIG = BertConfig(vocab_size=61, hidden_size=20, num_hidden_layers=2, num_attention_heads=5, intermediate_size=28,
                    max_position_embeddings=13, num_labels=3)   # odd shapes: head_dim 4, 5 heads, 3 labels


def _transformers_twin(ours, cls):
    "transformers' model of class `cls` with the weights of `ours` (strict: the same names)."
    d = {k: v for k, v in CONFIG.to_dict().items() if k != 'model_type'}
    cfg = transformers.BertConfig(**d)
    cfg._attn_implementation = 'eager'
    theirs = cls(cfg).eval()
    theirs.load_state_dict(ours.state_dict(), strict=False)   # our state dict has no position_ids buffer
    return theirs


torch.manual_seed(0)
OURS_CLF = BertForSequenceClassification(CONFIG).eval()
with torch.no_grad():                                        # a pooler and head that are not ~0: differences show
    for p in OURS_CLF.parameters(): p.add_(torch.randn_like(p) * 0.05)
THEIRS_CLF = _transformers_twin(OURS_CLF, transformers.BertForSequenceClassification)
OURS, THEIRS = OURS_CLF.bert, THEIRS_CLF.bert                # the encoders with the pooler: BertModel on both sides


@st.composite
def padded_batches(draw):
    "ids and a 0/1 mask (B, T): every row has a real token; patterns left, right, holes, [CLS] alone or random."
    B, T = draw(st.integers(1, 5)), draw(st.integers(1, CONFIG.max_position_embeddings))
    rows = []
    for _ in range(B):
        kind = draw(st.sampled_from(['left', 'right', 'holes', 'cls_only', 'full']))
        n = draw(st.integers(1, T))
        if kind == 'left': row = [0] * (T - n) + [1] * n
        elif kind == 'right': row = [1] * n + [0] * (T - n)
        elif kind == 'cls_only': row = [1] + [0] * (T - 1)
        elif kind == 'full': row = [1] * T
        else:   # holes anywhere, position 0 included; at least one real token
            row = draw(st.lists(st.integers(0, 1), min_size=T, max_size=T))
            if not any(row): row[draw(st.integers(0, T - 1))] = 1
        rows.append(row)
    mask = torch.tensor(rows)
    seed = draw(st.integers(0, 2**16))
    ids = torch.randint(1, CONFIG.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed)) * mask
    return ids, mask


def _check(ids, mask):
    real = mask.bool()
    with torch.no_grad():
        ours, theirs = OURS(ids, mask), THEIRS(ids, attention_mask=mask)
        ours_logits, their_logits = OURS_CLF(ids, mask).logits, THEIRS_CLF(ids, attention_mask=mask).logits
    gap = lambda a, b: (a - b).abs().max().item()
    hidden = gap(ours.last_hidden_state[real], theirs.last_hidden_state[real])
    pooler, logits = gap(ours.pooler_output, theirs.pooler_output), gap(ours_logits, their_logits)
    assert max(hidden, pooler, logits) < TOL, f'mask {mask.tolist()}: hidden {hidden:.1e}, pooler {pooler:.1e}, logits {logits:.1e}'
    return pooler, logits


@settings(max_examples=30, deadline=None)
@given(padded_batches())
def test_unpadded_model_gives_transformers_numbers_for_any_padding(batch):
    assert OURS.unpad and OURS_CLF.bert.unpad
    _check(*batch)


@settings(max_examples=15, deadline=None)
@given(padded_batches(), st.integers(0, 4))
def test_first_position_padded(batch, row):
    "The case that needs care: position 0 of some row is padding (left padding, or a hole at the start)."
    ids, mask = batch
    hypothesis.assume(mask.shape[1] > 1)
    row = row % len(mask)
    mask[row, 0] = 0
    if not mask[row].any(): mask[row, -1] = 1                      # still a real token in the row
    ids = ids.clamp_min(1) * mask
    _check(ids, mask)


def test_left_padding_example():
    "A fixed left-padded batch, through `set_unpad(False)` as well: the switch changes no number that counts."
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1], [0, 1, 1, 1, 1, 1]])
    ids = torch.randint(1, CONFIG.vocab_size, mask.shape, generator=torch.Generator().manual_seed(3)) * mask
    pooler_gap, logit_gap = _check(ids, mask)
    print(f'left padding, unpad on: pooler {pooler_gap:.1e}, logits {logit_gap:.1e}')
    try:
        OURS_CLF.set_unpad(False)
        with torch.no_grad(): every = OURS_CLF(ids, mask).logits
    finally: OURS_CLF.set_unpad(True)
    with torch.no_grad(): assert (OURS_CLF(ids, mask).logits - every).abs().max().item() < TOL
