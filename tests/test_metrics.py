"""bert_book.metrics seen from outside: entity extraction and scores equal seqeval's (its default and strict modes),
the report equals seqeval's classification_report, token accuracy and perplexity equal their definitions, bad input
fails clearly. seqeval and scikit-learn are test-only dependencies."""
import importlib
import itertools, math, random, subprocess, sys, warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from bert_book.metrics import (SCHEME_RULES, UndefinedMetricWarning, classification_report, corpus_entities, entity_scores,
                               get_entities, get_entities_lenient, get_scheme, ner_scores, partial_match_counts,
                               perplexity, plot_confusion_matrix, token_accuracy, token_confusion_matrix)

seqeval = importlib.import_module('seqeval')
from seqeval import scheme as sq
from seqeval.metrics import classification_report as sq_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities as sq_get_entities

SEQEVAL_SCHEMES = {'IOB1': sq.IOB1, 'IOB2': sq.IOB2, 'IOE2': sq.IOE2, 'BIOES': sq.IOBES}

class IOE1Fixed(sq.IOE1):
    "seqeval's IOE1 plus the start rules it lacks: an E- after O, after an I- of another type, after an E- of another type."
    start_patterns = sq.IOE1.start_patterns | {(sq.Prefix.O, sq.Prefix.E, sq.Tag.ANY), (sq.Prefix.I, sq.Prefix.E, sq.Tag.DIFF),
                                               (sq.Prefix.E, sq.Prefix.E, sq.Tag.DIFF)}

REFERENCE = {**SEQEVAL_SCHEMES, 'IOE1': IOE1Fixed}
TYPES = ('PER', 'LOC', 'ORG')
AVERAGES = ('micro', 'macro', 'weighted')

def alphabet(scheme, types=TYPES):
    return ['O'] + [f'{p}-{t}' for p in get_scheme(scheme).prefixes for t in types]

def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return fn(*args, **kw)

def seqeval_entities_strict(tags, scheme):
    return [(e.tag, e.start, e.end) for e in sq.Tokens(list(tags), REFERENCE[scheme]).entities]

def seqeval_prf(y_true, y_pred, mode, scheme, average):
    "seqeval's precision, recall and F1; its NaN (macro over no entity at all) read as our 0.0."
    kw = {'mode': 'strict', 'scheme': REFERENCE[scheme]} if mode == 'strict' else {}
    vals = [quiet(fn, y_true, y_pred, average=average, **kw) for fn in (precision_score, recall_score, f1_score)]
    return [0.0 if math.isnan(v) else float(v) for v in vals]

def seqeval_report(y_true, y_pred, mode, scheme, **kw):
    extra = {'mode': 'strict', 'scheme': REFERENCE[scheme]} if mode == 'strict' else {}
    return quiet(sq_report, y_true, y_pred, **extra, **kw)

def assert_same_scores(y_true, y_pred, mode, scheme):
    for average in AVERAGES:
        ours = quiet(entity_scores, y_true, y_pred, mode=mode, scheme=scheme, average=average)
        theirs = seqeval_prf(y_true, y_pred, mode, scheme, average)
        assert [ours['precision'], ours['recall'], ours['f1']] == pytest.approx(theirs, abs=1e-9), (mode, scheme, average)
        gold = corpus_entities(y_true, mode, scheme)
        assert ours['support'] == len(set(gold))

def assert_same_report(y_true, y_pred, mode, scheme):
    ours = quiet(classification_report, y_true, y_pred, mode=mode, scheme=scheme, output_dict=True)
    theirs = seqeval_report(y_true, y_pred, mode, scheme, output_dict=True)
    assert list(ours) == list(theirs)
    for row in theirs:
        for k in ('precision', 'recall', 'f1-score'):
            want = 0.0 if math.isnan(theirs[row][k]) else theirs[row][k]
            assert ours[row][k] == pytest.approx(want, abs=1e-9), (row, k)
        assert ours[row]['support'] == theirs[row]['support']


# --- fixed cases ---------------------------------------------------------------------------------------------------

FIXED = [
    # seqeval's README example
    ([['O', 'O', 'O', 'B-MISC', 'I-MISC', 'I-MISC', 'O'], ['B-PER', 'I-PER', 'O']],
     [['O', 'O', 'B-MISC', 'I-MISC', 'I-MISC', 'I-MISC', 'O'], ['B-PER', 'I-PER', 'O']]),
    # I- starts, B-X B-X, B-X I-Y, type change inside
    ([['B-PER', 'I-PER', 'O']], [['I-PER', 'I-PER', 'O']]),
    ([['B-PER', 'I-PER', 'O']], [['B-PER', 'B-PER', 'O']]),
    ([['B-PER', 'O', 'B-LOC']], [['B-PER', 'I-LOC', 'B-LOC']]),
    ([['B-ORG', 'B-PER', 'I-PER']], [['B-ORG', 'I-PER', 'I-PER']]),
    # nothing predicted; nothing in gold; nothing anywhere; empty sentences
    ([['B-PER', 'I-PER', 'O']], [['O', 'O', 'O']]),
    ([['O', 'O']], [['B-LOC', 'O']]),
    ([['O', 'O'], []], [['O', 'O'], []]),
    ([[], ['B-LOC']], [[], ['B-LOC']]),
    # a type that is only predicted, one only in gold
    ([['B-PER', 'O', 'B-LOC', 'I-LOC'], ['B-ORG']], [['B-PER', 'O', 'B-MISC', 'I-MISC'], ['B-ORG']]),
]

@pytest.mark.parametrize('y_true,y_pred', FIXED)
@pytest.mark.parametrize('mode', ['default', 'strict'])
def test_fixed_cases_equal_seqeval(y_true, y_pred, mode):
    assert_same_scores(y_true, y_pred, mode, 'IOB2')
    assert_same_report(y_true, y_pred, mode, 'IOB2')

def test_fixed_case_known_values():
    y_true, y_pred = FIXED[0]
    for avg in AVERAGES:
        s = entity_scores(y_true, y_pred, average=avg)
        assert (s['precision'], s['recall'], s['f1'], s['support']) == pytest.approx((0.5, 0.5, 0.5, 2))
    # the modes disagree where the tagger writes what no scheme would
    t, p = FIXED[3]
    assert entity_scores(t, p, mode='default')['f1'] == pytest.approx(0.8)
    assert entity_scores(t, p, mode='strict')['f1'] == pytest.approx(1.0)
    t, p = FIXED[1]
    assert entity_scores(t, p, mode='default')['f1'] == 1.0
    with pytest.warns(UndefinedMetricWarning, match='no predicted entity'):
        assert entity_scores(t, p, mode='strict')['f1'] == 0.0


# --- entity extraction ---------------------------------------------------------------------------------------------

def test_lenient_entities_equal_seqeval_get_entities_exhaustively():
    tags = ['O'] + [f'{p}-{t}' for p in 'BIES' for t in ('PER', 'LOC')]
    n = 0
    for length in range(5):
        for seq in itertools.product(tags, repeat=length):
            theirs = [(t, s, e + 1) for t, s, e in quiet(sq_get_entities, list(seq))]  # seqeval's end is inclusive
            assert get_entities_lenient(seq) == theirs, seq
            n += 1
    assert n == sum(9 ** k for k in range(5))

@pytest.mark.parametrize('scheme', ['IOB1', 'IOB2', 'IOE1', 'IOE2', 'BIOES'])
def test_strict_entities_equal_seqeval_exhaustively(scheme):
    tags = alphabet(scheme, ('PER', 'LOC'))
    max_len = 4 if len(tags) > 5 else 5
    for length in range(max_len + 1):
        for seq in itertools.product(tags, repeat=length):
            assert get_entities(seq, scheme) == seqeval_entities_strict(seq, scheme), (scheme, seq)

def test_ioe1_differs_from_seqeval_only_where_seqeval_misses_an_E_start():
    "Unpatched seqeval IOE1 misses an entity opened by E- after O; ours (and seqeval's lenient reader) find it."
    seq = ['O', 'E-PER', 'I-PER']
    assert get_entities(seq, 'IOE1') == [('PER', 1, 2), ('PER', 2, 3)]
    assert [(e.tag, e.start, e.end) for e in sq.Tokens(seq, sq.IOE1).entities] == [('PER', 2, 3)]
    assert get_entities_lenient(seq) == get_entities(seq, 'IOE1')
    for seq in itertools.product(alphabet('IOE1', ('PER', 'LOC')), repeat=4):
        ours = get_entities(seq, 'IOE1')
        unpatched = [(e.tag, e.start, e.end) for e in sq.Tokens(list(seq), sq.IOE1).entities]
        if ours != unpatched:  # every difference involves an E- that opens an entity
            assert any(seq[s][0] == 'E' for _, s, _ in set(ours) - set(unpatched)), seq

def test_iobes_alias_and_end_is_exclusive():
    tags = ['B-PER', 'E-PER', 'O', 'S-LOC']
    assert get_entities(tags, 'IOBES') == get_entities(tags, 'bioes') == [('PER', 0, 2), ('LOC', 3, 4)]
    words = ['Ada', 'Lovelace', 'in', 'London']
    assert [' '.join(words[s:e]) for _, s, e in get_entities(tags, 'BIOES')] == ['Ada Lovelace', 'London']
    assert get_scheme('IOBES') is SCHEME_RULES['BIOES']

def encode(spans, n, scheme):
    "Tags of a sentence of `n` words with non-overlapping typed `spans` (type, start, end) written in `scheme`."
    tags = ['O'] * n
    ends = {e: t for t, _, e in spans}
    starts = {s: t for t, s, _ in spans}
    for typ, s, e in spans:
        for i in range(s, e): tags[i] = f'I-{typ}'
        if scheme == 'IOB2': tags[s] = f'B-{typ}'
        elif scheme == 'IOE2': tags[e - 1] = f'E-{typ}'
        elif scheme == 'BIOES':
            if e - s == 1: tags[s] = f'S-{typ}'
            else: tags[s], tags[e - 1] = f'B-{typ}', f'E-{typ}'
        elif scheme == 'IOB1' and ends.get(s) == typ: tags[s] = f'B-{typ}'       # right after one of the same type
        elif scheme == 'IOE1' and starts.get(e) == typ: tags[e - 1] = f'E-{typ}'  # right before one of the same type
    return tags

@st.composite
def sentences_with_spans(draw):
    n = draw(st.integers(0, 14))
    spans, i = [], 0
    while i < n:
        if draw(st.booleans()):
            length = draw(st.integers(1, 3))
            spans.append((draw(st.sampled_from(TYPES)), i, min(i + length, n))); i += length
        else: i += 1
    return spans, n

@settings(max_examples=150, deadline=None, derandomize=True)
@given(sentences_with_spans())
def test_every_scheme_round_trips_and_both_readers_agree_on_well_formed_tags(case):
    spans, n = case
    for scheme in ('IOB1', 'IOB2', 'IOE1', 'IOE2', 'BIOES'):
        tags = encode(spans, n, scheme)
        assert get_entities(tags, scheme) == spans, (scheme, tags)
        assert get_entities_lenient(tags, scheme) == spans, (scheme, tags)


# --- scores on random and ill-formed sequences (hypothesis) ---------------------------------------------------------

@st.composite
def scored_pairs(draw):
    "(scheme, mode, y_true, y_pred): random tags (mostly ill-formed) or well-formed gold with a few tags changed."
    scheme = draw(st.sampled_from(['IOB1', 'IOB2', 'IOE1', 'IOE2', 'BIOES']))
    mode = draw(st.sampled_from(['default', 'strict']))
    tag = st.sampled_from(alphabet(scheme))
    lengths = draw(st.lists(st.integers(0, 9), min_size=1, max_size=5))
    if draw(st.booleans()):
        y_true = [draw(st.lists(tag, min_size=n, max_size=n)) for n in lengths]
    else:
        y_true = []
        for n in lengths:
            spans, i = [], 0
            while i < n:
                if draw(st.booleans()):
                    k = draw(st.integers(1, 3)); spans.append((draw(st.sampled_from(TYPES)), i, min(i + k, n))); i += k
                else: i += 1
            y_true.append(encode(spans, n, scheme))
    y_pred = []
    for sent in y_true:
        flips = draw(st.lists(st.tuples(st.integers(0, max(len(sent) - 1, 0)), tag), max_size=3))
        new = list(sent)
        for i, t in flips:
            if new: new[i] = t
        y_pred.append(new)
    return scheme, mode, y_true, y_pred

@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(scored_pairs())
def test_entity_scores_and_report_equal_seqeval_on_random_tags(case):
    scheme, mode, y_true, y_pred = case
    assert_same_scores(y_true, y_pred, mode, scheme)
    assert_same_report(y_true, y_pred, mode, scheme)

def test_text_report_has_seqeval_layout():
    y_true = [['O', 'B-PER', 'I-PER', 'O', 'B-LOC'], ['B-ORG', 'I-ORG', 'O', 'B-LOC']]
    y_pred = [['O', 'B-PER', 'I-PER', 'O', 'B-LOC'], ['B-ORG', 'O', 'O', 'B-PER']]
    for mode in ('default', 'strict'):
        ours = classification_report(y_true, y_pred, mode=mode, digits=4)
        theirs = seqeval_report(y_true, y_pred, mode, 'IOB2', digits=4)
        body, last = ours.rsplit('\n', 1)
        assert body == theirs.rstrip('\n') + '\n'
        assert last == f"mode={mode!r}, scheme='IOB2'"

def test_report_with_no_entity_at_all():
    text = quiet(classification_report, [['O']], [['O']])
    assert 'micro avg' in text and 'mode=' in text
    d = quiet(classification_report, [['O']], [['O']], output_dict=True)
    assert list(d) == ['micro avg', 'macro avg', 'weighted avg']
    assert all(row['f1-score'] == 0.0 and row['support'] == 0 for row in d.values())


# --- zero division ----------------------------------------------------------------------------------------------------

def test_zero_division_is_zero_with_a_warning():
    with pytest.warns(UndefinedMetricWarning, match='precision'):
        s = entity_scores([['B-PER']], [['O']])
    assert s == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 1}
    with pytest.warns(UndefinedMetricWarning, match='recall'):
        s = entity_scores([['O']], [['B-PER']])
    assert (s['precision'], s['recall'], s['support']) == (0.0, 0.0, 0)
    with pytest.warns(UndefinedMetricWarning, match='LOC'):  # per type: names the type
        entity_scores([['B-PER', 'B-LOC']], [['B-PER', 'O']], average='macro')
    # macro over no entity at all: 0.0 here, NaN in seqeval (np.average of nothing)
    assert quiet(entity_scores, [['O']], [['O']], average='macro')['f1'] == 0.0
    assert math.isnan(quiet(f1_score, [['O']], [['O']], average='macro'))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a well-defined score does not warn
        entity_scores([['B-PER']], [['B-PER']], average='macro')


# --- bad inputs --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('y_true,y_pred,message', [
    ([], [], 'y_true is empty'),
    ([['O']], [], 'y_pred is empty'),
    ([['O'], ['O']], [['O']], 'y_true has 2 sentences but y_pred has 1'),
    ([['O', 'O'], ['O', 'B-PER', 'O']], [['O', 'O'], ['O', 'B-PER']], 'sentence 1: y_true has 3 tags but y_pred has 2'),
    (['O', 'B-PER'], ['O', 'B-PER'], "y_true[0] is str 'O', not a sequence of tags"),
    ('B-PER', 'B-PER', 'y_true must be a list of tag sequences'),
    ([['O', 'X-PER']], [['O', 'O']], "y_true[0][1]: 'X-PER' is not a valid IOB2 tag"),
    ([['O', 'O']], [['B-', 'O']], "y_pred[0][0]: 'B-' is not a valid IOB2 tag"),
    ([['O', 'O']], [['O', 'B']], "y_pred[0][1]: 'B' is not a valid IOB2 tag"),
    ([['S-PER']], [['O']], "scheme='BIOES'"),
    ([['O']], [['O', ]], None),
])
@pytest.mark.parametrize('mode', ['default', 'strict'])
def test_bad_inputs_raise_clearly(y_true, y_pred, message, mode):
    if message is None:
        quiet(entity_scores, y_true, y_pred, mode=mode)  # the control: well-formed input does not raise
        return
    with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]').replace('(', r'\(')):
        entity_scores(y_true, y_pred, mode=mode)
    with pytest.raises(ValueError):
        classification_report(y_true, y_pred, mode=mode)
    with pytest.raises(ValueError):
        partial_match_counts(y_true, y_pred, mode=mode)

def test_bad_options_raise_clearly():
    with pytest.raises(ValueError, match="mode must be one of"): entity_scores([['O']], [['O']], mode='lenient')
    with pytest.raises(ValueError, match="average must be one of"): entity_scores([['O']], [['O']], average=None)
    with pytest.raises(ValueError, match="unknown tagging scheme 'BILOU'"): entity_scores([['O']], [['O']], scheme='BILOU')
    with pytest.raises(ValueError, match="'E-PER' is not a valid IOB2 tag"): get_entities_lenient(['E-PER'], 'IOB2')
    assert get_entities_lenient(['E-PER']) == [('PER', 0, 1)]  # no scheme: every prefix is legal, as in seqeval


# --- token accuracy and perplexity ---------------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.integers(1, 4), st.integers(1, 9), st.integers(2, 7), st.integers(0, 2**31 - 1))
def test_token_accuracy_equals_its_definition(batch, length, n_classes, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, n_classes, generator=g)
    labels = torch.randint(0, n_classes, (batch, length), generator=g)
    labels[torch.rand(batch, length, generator=g) < 0.3] = -100
    labels[0, 0] = 0  # at least one scored position
    keep = labels != -100
    want = (logits.argmax(-1)[keep] == labels[keep]).double().mean().item()
    assert token_accuracy(labels, logits) == pytest.approx(want, abs=1e-12)
    assert token_accuracy(labels, logits.argmax(-1)) == pytest.approx(want, abs=1e-12)
    assert token_accuracy(labels.tolist(), logits.tolist()) == pytest.approx(want, abs=1e-12)
    # ragged: sentence i keeps its first i + 1 positions
    ps = [logits[i, :min(i + 1, length)] for i in range(batch)]
    ls = [labels[i, :min(i + 1, length)] for i in range(batch)]
    kept = torch.cat([l for l in ls]) != -100
    if kept.any():
        want_r = (torch.cat([p.argmax(-1) for p in ps])[kept] == torch.cat(ls)[kept]).double().mean().item()
        assert token_accuracy(ls, ps) == pytest.approx(want_r, abs=1e-12)

def test_token_accuracy_errors_and_tags():
    logits, labels = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match='every label is ignore_index=-100'): token_accuracy(torch.full((2, 3), -100), logits)
    with pytest.raises(ValueError, match=r'y_true\[1, 2\] = 4 is neither a class id in \[0, 4\)'):
        bad = labels.clone(); bad[1, 2] = 4; token_accuracy(bad, logits)
    with pytest.raises(ValueError, match=r'do not match y_true of shape \(2, 2\)'): token_accuracy(labels[:, :2], logits)
    with pytest.raises(ValueError, match='integer class ids'): token_accuracy(labels.float(), logits)
    with pytest.raises(ValueError, match='sentence 1: y_true has 2 tags but y_pred has 1'):
        token_accuracy([['O'], ['O', 'O']], [['O'], ['O']])
    assert token_accuracy(labels, logits) == 1.0
    with pytest.raises(ValueError, match='every label is ignore_index=0'): token_accuracy(labels, logits, ignore_index=0)
    assert token_accuracy(torch.tensor([1, 0, 0]), torch.tensor([1, 2, 3]), ignore_index=0) == 1.0  # only position 0 scored
    assert token_accuracy([['B-PER', 'I-PER'], ['O']], [['B-PER', 'O'], ['O']]) == pytest.approx(2 / 3)


def test_token_accuracy_takes_gold_first():
    "y_true first: the ignored positions are read from it, and logits in its place are a clear error."
    gold = torch.tensor([[2, -100, 1]])
    pred = torch.tensor([[2, 0, 0]])
    assert token_accuracy(gold, pred) == 0.5                       # position 1 is ignored: it is -100 in y_true
    assert token_accuracy(pred, gold) == pytest.approx(1 / 3)     # swapped, ids: every position scored
    logits = torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match='y_true must be integer class ids.*gold ids first'):
        token_accuracy(logits, gold)                               # logits as y_true: a float tensor
    with pytest.raises(ValueError, match='gold ids first'): token_accuracy(logits.tolist(), gold.tolist())
    assert token_accuracy(y_true=gold, y_pred=logits) == token_accuracy(gold, logits.argmax(-1))

def test_perplexity():
    for loss in (0.0, 0.5, 2.3, 10.0):
        assert perplexity(loss) == pytest.approx(math.exp(loss))
        assert perplexity(torch.tensor(loss)) == pytest.approx(math.exp(loss), rel=1e-6)
    v = 1000
    ce = torch.nn.functional.cross_entropy(torch.zeros(4, v), torch.arange(4))
    assert perplexity(ce) == pytest.approx(v, rel=1e-5)
    assert perplexity(1e6) == math.inf
    for bad, msg in ((-0.1, 'never negative'), (float('nan'), 'NaN'), (torch.ones(2), r'shape \(2,\)'), ('1.0', 'as a number')):
        with pytest.raises(ValueError, match=msg): perplexity(bad)


# --- partial matches, confusion matrix, summary ----------------------------------------------------------------------

def test_partial_match_counts_hand_case():
    gold = [['B-PER', 'O', 'B-ORG', 'I-ORG', 'O', 'B-LOC', 'O', 'B-DATE', 'O', 'O']]
    pred = [['B-PER', 'O', 'B-ORG', 'O', 'O', 'B-PER', 'O', 'O', 'O', 'B-ORG']]
    pm = partial_match_counts(gold, pred)
    outcomes = ('correct', 'incorrect', 'partial', 'missed', 'spurious')
    assert [pm['strict'][k] for k in outcomes] == [1, 2, 0, 1, 1]
    assert [pm['exact'][k] for k in outcomes] == [2, 1, 0, 1, 1]
    assert [pm['partial'][k] for k in outcomes] == [2, 0, 1, 1, 1]
    assert [pm['ent_type'][k] for k in outcomes] == [2, 1, 0, 1, 1]
    assert pm['partial']['precision'] == pytest.approx(2.5 / 4)
    # a gold entity is matched once: the second prediction inside it is spurious
    pm = partial_match_counts([['B-ORG', 'I-ORG', 'I-ORG', 'I-ORG']], [['B-ORG', 'I-ORG', 'B-ORG', 'I-ORG']])
    assert (pm['partial']['partial'], pm['partial']['spurious'], pm['partial']['missed']) == (1, 1, 0)

@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(scored_pairs())
def test_partial_match_invariants(case):
    scheme, mode, y_true, y_pred = case
    pm = partial_match_counts(y_true, y_pred, mode=mode, scheme=scheme)
    n_gold, n_pred = len(corpus_entities(y_true, mode, scheme)), len(corpus_entities(y_pred, mode, scheme))
    s = quiet(entity_scores, y_true, y_pred, mode=mode, scheme=scheme)
    for schema, c in pm.items():
        assert c['possible'] == n_gold and c['actual'] == n_pred, schema
    assert (pm['strict']['precision'], pm['strict']['recall'], pm['strict']['f1']) == pytest.approx((s['precision'], s['recall'], s['f1']))
    assert pm['partial']['f1'] >= pm['exact']['f1'] - 1e-12 and pm['exact']['f1'] >= pm['strict']['f1'] - 1e-12
    assert pm['ent_type']['f1'] >= pm['strict']['f1'] - 1e-12

def test_confusion_matrix_equals_sklearn():
    from sklearn.metrics import confusion_matrix
    rng = random.Random(0)
    tags = alphabet('IOB2')
    y_true = [[rng.choice(tags) for _ in range(rng.randint(0, 12))] for _ in range(30)]
    y_pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in y_true]
    flat_t, flat_p = [t for s in y_true for t in s], [t for s in y_pred for t in s]
    for normalize in (None, 'true', 'pred', 'all'):
        cm, labels = token_confusion_matrix(y_true, y_pred, normalize=normalize)
        assert labels[0] == 'O' and sorted(labels) == sorted(set(flat_t) | set(flat_p))
        want = confusion_matrix(flat_t, flat_p, labels=labels, normalize=normalize)
        np.testing.assert_allclose(cm, want, atol=1e-12)
    with pytest.raises(ValueError, match=r"y_true\[\d+\]\[\d+\]: tag '.*' is not in labels"):
        token_confusion_matrix(y_true, y_pred, labels=['O'])

def test_plot_confusion_matrix_returns_a_figure():
    from matplotlib.figure import Figure
    fig = plot_confusion_matrix([['B-PER', 'I-PER', 'O']], [['B-PER', 'O', 'O']], normalize=None, title='t')
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == 't'
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ['O', 'B-PER', 'I-PER']

def test_ner_scores_names_the_mode():
    s = ner_scores([['B-PER', 'O', 'B-LOC']], [['B-PER', 'I-LOC', 'B-LOC']])
    assert s['token_accuracy'] == pytest.approx(2 / 3)
    assert s['f1_default'] == pytest.approx(0.8) and s['f1_strict'] == pytest.approx(1.0)
    assert set(s) == {'token_accuracy'} | {f'{k}_{m}' for k in ('precision', 'recall', 'f1', 'support') for m in ('default', 'strict')}

def test_package_does_not_import_peers_or_matplotlib():
    code = ("import sys, bert_book.metrics; bad = [m for m in ('seqeval', 'sklearn', 'transformers', 'matplotlib') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, '-c', code], check=True)
