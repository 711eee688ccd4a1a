"""bert_book.data seen from outside: CoNLL and JSON-lines files, tagging schemes, the synthetic generator and the
bundled sample data."""
import importlib.resources
import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from bert_book.synthetic import synthetic_corpus, synthetic_ner, write_sample_data
from bert_book.data import (SAMPLE_LABELS, SCHEMES, Span, TaggedSentence, convert_sentences, convert_tags,
                            detokenize, load_corpus, load_sample, read_conll, read_jsonl, sample_path,
                            sequence_error, spans_to_tags, tags_to_spans, toy_corpus, toy_ner, validate_tags,
                            write_conll, write_jsonl)


# ---- bad input: every error names the file and the line ------------------------------------------------------------

def _error(tmp_path, text, reader=read_conll, name='bad.conll', **kw):
    "Write `text` to a file, read it with `reader`, and return the ValueError's message."
    path = tmp_path / name
    path.write_text(text, encoding='utf-8')
    with pytest.raises(ValueError) as e:
        reader(path, **kw)
    msg = str(e.value)
    assert str(path) in msg, f'the message does not name the file: {msg}'
    return msg


@pytest.mark.parametrize('text, kw, line, words', [
    ('EU NNP B-NP I-ORG\nrejects VBZ B-VP O\n\nGerman JJ I-MISC\n', {}, 4, '3 columns where line 1 has 4'),
    ('EU B-ORG\nrejects O\n\n\nGerman\n', {}, 5, "token 'German' has no tag"),
    ('German\nEU B-ORG\n', {}, 1, "token 'German' has no tag"),
    ('EU\tB-ORG\nrejects\t\n', dict(sep='\t'), 2, 'empty column'),
    ('EU B-ORG\nrejects O\ncall B-\n', dict(scheme='IOB2'), 3, "tag 'B-' is not a valid IOB2 tag"),
    ('EU B-ORG\n\nrejects X-PER\n', dict(scheme='IOB2'), 3, "prefix 'X' is not one of B/I"),
    ('EU B-ORG\n\nrejects S-PER\n', dict(scheme='IOB2'), 3, "prefix 'S'"),
    ('EU B-ORG\n\nrejects B-DATE\n', dict(labels=SAMPLE_LABELS), 3, "tag 'B-DATE' is not one of the allowed labels"),
    ('EU B-ORG\nrejects O\nGerman I-PER\n', dict(scheme='IOB2', strict=True), 3, "tag 'I-PER' after 'O'"),
    ('-DOCSTART- O\n\nEU B-LOC\nGerman I-PER\n', dict(scheme='IOB2', strict=True), 4, "tag 'I-PER' after 'B-LOC'"),
    ('EU I-ORG\nGerman B-PER\n', dict(scheme='IOB1', strict=True), 2, "tag 'B-PER' after 'I-ORG'"),
    ('EU B-ORG\nGerman E-ORG\nx S-PER\ny I-PER\n', dict(scheme='BIOES', strict=True), 4, "tag 'I-PER' after 'S-PER'"),
    ('# a comment\nEU B-ORG\nrejects O\n', {}, 2, "is line 1 a comment?"),
])
def test_conll_errors_name_file_and_line(tmp_path, text, kw, line, words):
    msg = _error(tmp_path, text, **kw)
    assert f'bad.conll, line {line}:' in msg, msg
    assert words in msg, msg


def test_line_numbers_count_comment_lines(tmp_path):
    msg = _error(tmp_path, '# header\nEU B-ORG\n# inside\nrejects O\nGerman I-PER\n', scheme='IOB2', strict=True, comment='#')
    assert 'bad.conll, line 5:' in msg, msg


def test_ill_formed_tags_pass_unless_strict(tmp_path):
    path = tmp_path / 'lenient.conll'
    path.write_text('EU O\nGerman I-PER\n')
    assert read_conll(path, scheme='IOB2')[0].tags == ['O', 'I-PER']          # nothing repaired, nothing dropped
    with pytest.raises(ValueError, match='line 2'):
        read_conll(path, scheme='IOB2', strict=True)
    with pytest.raises(ValueError, match='strict=True needs a scheme'):
        read_conll(path, strict=True)


@pytest.mark.parametrize('text, kw, line, words', [
    ('{"tokens": ["EU"], "tags": ["B-ORG"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n', {}, 2, '2 tokens but 1 tags'),
    ('{"tokens": ["EU"], "tags": ["B-ORG"]}\n\n{"tokens": ["EU"]}\n', {}, 3, "no 'tags' key"),
    ('{"tokens": ["EU"], "tags": ["B-ORG"]\n', {}, 1, 'not valid JSON'),
    ('["EU", "B-ORG"]\n', {}, 1, 'expected a JSON object'),
    ('{"tokens": ["EU", 3], "tags": ["O", "O"]}\n', {}, 1, "'tokens' must be a list of strings"),
    ('{"tokens": ["EU"], "tags": ["B-ORG"]}\n{"tokens": ["a", "b"], "tags": ["O", "X-LOC"]}\n', dict(scheme='IOB2'), 2, "token 1: tag 'X-LOC'"),
    ('{"tokens": ["a", "b"], "tags": ["O", "B-DATE"]}\n', dict(labels=SAMPLE_LABELS), 1, "token 1: tag 'B-DATE'"),
    ('{"tokens": ["a", "b"], "tags": ["O", "I-LOC"]}\n', dict(scheme='IOB2', strict=True), 1, "token 1: tag 'I-LOC' after 'O'"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, text, kw, line, words):
    msg = _error(tmp_path, text, reader=read_jsonl, name='bad.jsonl', **kw)
    assert f'bad.jsonl, line {line}' in msg, msg
    assert words in msg, msg


def test_missing_files():
    with pytest.raises(FileNotFoundError, match='no CoNLL file'):
        read_conll('/nonexistent/x.conll')
    with pytest.raises(FileNotFoundError, match='no JSON-lines file'):
        read_jsonl('/nonexistent/x.jsonl')
    with pytest.raises(FileNotFoundError, match="no sample file 'valid'"):
        sample_path('valid')


def test_tagged_sentence_validates_lengths():
    with pytest.raises(ValueError, match='3 tokens but 2 tags'):
        TaggedSentence(['a', 'b', 'c'], ['O', 'O'])
    with pytest.raises(ValueError, match='extra column 0 has 1 values'):
        TaggedSentence(['a', 'b'], ['O', 'O'], [['NN']])


def test_write_conll_refuses_what_cannot_read_back(tmp_path):
    with pytest.raises(ValueError, match='sentence 1 is empty'):
        write_conll([TaggedSentence(['a'], ['O']), TaggedSentence([], [])], tmp_path / 'x.conll')
    with pytest.raises(ValueError, match='sentence 0, token 1'):
        write_conll([TaggedSentence(['New', 'York City'], ['B-LOC', 'I-LOC'])], tmp_path / 'x.conll')
    with pytest.raises(ValueError, match='sentence 1 has 3 columns but sentence 0 has 2'):
        write_conll([TaggedSentence(['a'], ['O']), TaggedSentence(['b'], ['O'], [['NN']])], tmp_path / 'x.conll')
    # with tabs, a token may hold a space
    s = [TaggedSentence(['New', 'York City'], ['B-LOC', 'I-LOC'])]
    write_conll(s, tmp_path / 'tab.conll', sep='\t')
    assert read_conll(tmp_path / 'tab.conll', sep='\t') == s


# ---- round trips ------------------------------------------------------------------------------------------------------

CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP I-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O

"""


def test_conll2003_round_trip_keeps_docstart_and_columns(tmp_path):
    src = tmp_path / 'eng.train'
    src.write_text(CONLL2003)
    sents = read_conll(src, scheme='IOB1', strict=True, keep_docstart=True)
    assert [len(s) for s in sents] == [9, 2, 2]
    assert [s.doc_start for s in sents] == [True, False, True]
    assert sents[0].columns[0][:3] == ['NNP', 'VBZ', 'JJ'] and sents[0].columns[1][:2] == ['B-NP', 'B-VP']
    write_conll(sents, tmp_path / 'out.conll')
    assert (tmp_path / 'out.conll').read_text() == CONLL2003
    assert read_conll(tmp_path / 'out.conll', keep_docstart=True) == sents
    # skipped by default: the same sentences, no document marks
    plain = read_conll(src)
    assert [s.tokens for s in plain] == [s.tokens for s in sents] and not any(s.doc_start for s in plain)
    # JSON lines carry the same
    write_jsonl(sents, tmp_path / 'out.jsonl')
    assert read_jsonl(tmp_path / 'out.jsonl', scheme='IOB1', strict=True) == sents


def test_columns_tabs_and_tag_column(tmp_path):
    path = tmp_path / 'tabs.tsv'
    path.write_text('1\tJohn\tNNP\tB-PER\n2\tlives\tVBZ\tO\n\n1\tParis\tNNP\tB-LOC\n', encoding='utf-8')
    sents = read_conll(path, token_column=1, tag_column=3, sep='\t', scheme='IOB2')
    assert [s.tokens for s in sents] == [['John', 'lives'], ['Paris']]
    assert sents[0].columns == [['1', '2'], ['NNP', 'VBZ']]
    # the tag in the second column, mixed spaces and tabs
    path.write_text('John B-PER  NNP\nlives\tO VBZ\n', encoding='utf-8')
    s = read_conll(path, tag_column=1)[0]
    assert s.tags == ['B-PER', 'O'] and s.columns == [['NNP', 'VBZ']]
    with pytest.raises(ValueError, match='do not pick two different columns'):
        read_conll(path, token_column=0, tag_column=-3)


def test_crlf_and_no_final_newline(tmp_path):
    path = tmp_path / 'win.conll'
    path.write_bytes('EU B-ORG\r\nrejects O\r\n\r\nZürich B-LOC'.encode('utf-8'))
    assert [s.tokens for s in read_conll(path)] == [['EU', 'rejects'], ['Zürich']]


def test_jsonl_keeps_meta(tmp_path):
    path = tmp_path / 'x.jsonl'
    path.write_text(json.dumps({'id': 'a7', 'tokens': ['Zoë', 'Ó'], 'tags': ['B-PER', 'I-PER'], 'source': 'web'}) + '\n',
                    encoding='utf-8')
    s = read_jsonl(path)[0]
    assert s.meta == {'id': 'a7', 'source': 'web'}
    write_jsonl([s], tmp_path / 'y.jsonl')
    assert json.loads((tmp_path / 'y.jsonl').read_text(encoding='utf-8')) == json.loads(path.read_text(encoding='utf-8'))
    assert 'Zoë' in (tmp_path / 'y.jsonl').read_text(encoding='utf-8')   # written as is, not \u escaped


def test_synthetic_round_trip_both_formats(tmp_path):
    sents = synthetic_ner(300, seed=11, scheme='BIOES')
    assert read_conll(write_conll(sents, tmp_path / 's.conll'), scheme='BIOES', strict=True) == sents
    assert read_jsonl(write_jsonl(sents, tmp_path / 's.jsonl'), scheme='BIOES', strict=True) == sents


# ---- tagging schemes --------------------------------------------------------------------------------------------------

TYPES = ('PER', 'ORG', 'LOC', 'MISC')


@st.composite
def iob2_sequences(draw):
    "Random well-formed IOB2 tag sequences, adjacent same-type entities included."
    tags = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(['O', 'B', 'I']))
        if kind == 'I' and tags and tags[-1] != 'O':
            tags.append('I-' + tags[-1][2:])
        elif kind == 'O':
            tags.append('O')
        else:
            tags.append('B-' + draw(st.sampled_from(TYPES)))
    return tags


@settings(max_examples=300, deadline=None)
@given(iob2_sequences(), st.sampled_from(SCHEMES + ('IOBES', 'bio')))
def test_iob2_round_trip_through_every_scheme(tags, scheme):
    there = convert_tags(tags, 'IOB2', scheme)
    validate_tags(there, scheme, strict=True)
    assert tags_to_spans(there, scheme) == tags_to_spans(tags, 'IOB2')
    assert convert_tags(there, scheme, 'IOB2') == tags


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(['O', 'B-PER', 'I-PER', 'E-PER', 'S-PER', 'B-LOC', 'I-LOC', 'E-LOC']), max_size=12),
       st.sampled_from(SCHEMES))
def test_strict_check_agrees_with_reencoding(tags, scheme):
    try:
        validate_tags(tags, scheme)
    except ValueError:
        return  # prefixes outside the scheme
    ok = sequence_error(tags, scheme) is None
    assert ok == (spans_to_tags(tags_to_spans(tags, scheme), len(tags), scheme) == tags)


def test_worked_examples():
    spans = [Span('PER', 0, 2), Span('PER', 2, 3), Span('LOC', 4, 6)]          # "Ann Lee Bob in New York"
    assert spans_to_tags(spans, 6, 'IOB1') == ['I-PER', 'I-PER', 'B-PER', 'O', 'I-LOC', 'I-LOC']
    assert spans_to_tags(spans, 6, 'IOB2') == ['B-PER', 'I-PER', 'B-PER', 'O', 'B-LOC', 'I-LOC']
    assert spans_to_tags(spans, 6, 'IOE1') == ['I-PER', 'E-PER', 'I-PER', 'O', 'I-LOC', 'I-LOC']
    assert spans_to_tags(spans, 6, 'IOE2') == ['I-PER', 'E-PER', 'E-PER', 'O', 'I-LOC', 'E-LOC']
    assert spans_to_tags(spans, 6, 'IOBES') == ['B-PER', 'E-PER', 'S-PER', 'O', 'B-LOC', 'E-LOC']
    assert convert_tags(['O', 'I-PER', 'I-PER'], 'IOB2', 'IOB2', strict=False) == ['O', 'B-PER', 'I-PER']
    with pytest.raises(ValueError, match="token 1: tag 'I-PER' after 'O'"):
        convert_tags(['O', 'I-PER'], 'IOB2', 'BIOES')
    with pytest.raises(ValueError, match="unknown tagging scheme 'BILOU'"):
        convert_tags(['O'], 'IOB2', 'BILOU')
    with pytest.raises(ValueError, match='overlaps'):
        spans_to_tags([Span('PER', 0, 2), Span('LOC', 1, 3)], 3)


def test_spans_agree_with_seqeval():
    seqeval = importlib.import_module('seqeval.metrics.sequence_labeling')
    for s in synthetic_ner(200, seed=5):
        ours = [(e.label, e.start, e.end - 1) for e in tags_to_spans(s.tags, 'IOB2')]
        assert ours == seqeval.get_entities(s.tags)
    lenient = ['O', 'I-PER', 'B-LOC', 'I-PER', 'I-PER', 'O', 'I-LOC']   # ill-formed: both read it conlleval's way
    assert [(e.label, e.start, e.end - 1) for e in tags_to_spans(lenient)] == seqeval.get_entities(lenient)


# ---- the generator and the sample data --------------------------------------------------------------------------------

def test_synthetic_ner_is_seeded_and_varied():
    a, b = synthetic_ner(400, seed=3), synthetic_ner(400, seed=3)
    assert a == b and a != synthetic_ner(400, seed=4)
    ents = [(e.label, ' '.join(s.tokens[e.start:e.end])) for s in a for e in s.entities()]
    assert {l for l, _ in ents} == {'PER', 'ORG', 'LOC', 'MISC'}
    assert any(len(n.split()) >= 3 for _, n in ents)                          # multi-word names
    assert any(re.search(r'[^\x00-\x7f]', n) for _, n in ents)               # accents
    by_word = {}
    for l, n in ents:
        by_word.setdefault(n, set()).add(l)
    assert sum(len(v) > 1 for v in by_word.values()) >= 5                    # the same name, different types
    assert len(set(tuple(s.tokens) for s in synthetic_ner(500, seed=1, unique=True))) == 500
    with pytest.raises(ValueError, match='n_sentences'):
        synthetic_ner(-1)


def test_package_data_present_and_loadable(tmp_path):
    folder = importlib.resources.files('bert_book') / 'sample_data'
    names = {p.name for p in folder.iterdir()}
    assert {'ner_train.conll', 'ner_dev.conll', 'ner_test.conll', 'corpus.txt', 'README.md'} <= names
    assert 'synthetic' in (folder / 'README.md').read_text(encoding='utf-8').lower()
    total = sum((folder / n).stat().st_size for n in names if (folder / n).is_file())
    assert total < 3_000_000
    sizes = {split: len(load_sample(split)) for split in ('train', 'dev', 'test')}
    assert sizes == {'train': 2000, 'dev': 300, 'test': 300}
    train = load_sample('train')
    assert {t for s in train for t in s.tags} == set(SAMPLE_LABELS)
    assert [s.tags for s in load_sample('dev', scheme='BIOES')] == \
        [convert_tags(s.tags, 'IOB2', 'BIOES') for s in load_sample('dev')]
    corpus = load_corpus()
    assert 5000 <= len(corpus) <= 10000 and all(line.strip() for line in corpus)
    assert sample_path('corpus').stat().st_size < 1_500_000
    ner_text = {detokenize(s.tokens) for split in ('train', 'dev', 'test') for s in load_sample(split)}
    assert not ner_text & set(corpus)
    # the shipped files are what the generator makes
    made = write_sample_data(tmp_path)
    for name, path in made.items():
        assert path.read_bytes() == sample_path(name).read_bytes(), name
    with pytest.raises(ValueError, match="split must be"):
        load_sample('valid')


def test_toy_data():
    assert all(isinstance(s, str) and s for s in toy_corpus())
    toy = toy_ner()
    assert len(toy) == 4 and toy[0].tokens == ['John', 'lives', 'in', 'New', 'York']
    for s in toy:
        validate_tags(s.tags, 'IOB2', strict=True)
    assert convert_sentences(toy, 'IOB2', 'BIOES')[0].tags == ['S-PER', 'O', 'O', 'B-LOC', 'E-LOC']


def test_corpus_shares_style_with_ner():
    lines = synthetic_corpus(50, seed=2)
    assert lines == synthetic_corpus(50, seed=2) and len(lines) == 50
    assert all(' ,' not in l and not l.endswith(' .') for l in lines)
    assert detokenize(['(', 'Benfica', ')', 'won', '$', '3', 'million', '.']) == '(Benfica) won $3 million.'
