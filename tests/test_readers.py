"""bert_book.datasets.read_labelled_texts seen from outside, format by format: TSV read literally (a quote is text),
CSV with its RFC 4180 quoting, JSON lines; a UTF-8 byte-order mark accepted everywhere, plain and compressed; rows
with the wrong number of fields named by file and line; and any rows a writer can write read back equal."""
import bz2, csv, gzip, io, json, lzma, tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from bert_book.datasets import LabelledText, read_labelled_texts

OPENERS = {'': open, '.gz': gzip.open, '.bz2': bz2.open, '.xz': lzma.open}
COMPRESSIONS = list(OPENERS)
LABELS = ['pos', 'neg', 'so-so', '😐']


def _write(path: Path, content: str, bom: bool = False) -> Path:
    "Write `content` to `path` as UTF-8 (with a byte-order mark if `bom`), compressed as the suffix says."
    opener = OPENERS.get(path.suffix, open)
    with opener(path, 'wt', encoding='utf-8-sig' if bom else 'utf-8', newline='') as f: f.write(content)
    return path


def _message(path: Path, **kw) -> str:
    "The ValueError that reading `path` raises; its message must name the file."
    with pytest.raises(ValueError) as e: read_labelled_texts(path, **kw)
    assert path.name in str(e.value), str(e.value)
    return str(e.value)


# ---- TSV is read literally: one line one row, split on tabs, quotes are text -----------------------------------------

def test_tsv_keeps_quotes_and_never_merges_lines(tmp_path):
    p = _write(tmp_path / 'reviews.tsv', 'text\tlabel\n'
                                         '"Jaws\tpos\n'
                                         'Dull and far too long\tneg\n'
                                         'The shark is" the star\tpos\n'
                                         '"Jaws" is great\tpos\n'
                                         'A "so-so" film, said nobody\tneg\n')
    assert [(x.text, x.label) for x in read_labelled_texts(p)] == [
        ('"Jaws', 'pos'), ('Dull and far too long', 'neg'), ('The shark is" the star', 'pos'),
        ('"Jaws" is great', 'pos'), ('A "so-so" film, said nobody', 'neg')]


@pytest.mark.parametrize('content, message', [
    ('text\tlabel\nok\tpos\nfine\tpos\textra\n', 'line 3: 3 fields, the header has 2'),
    ('text\tlabel\nok\tpos\nno label here\n', 'line 3: 1 field, the header has 2'),
    ('text\tlabel\n"an open quote\tpos\nnext\n', 'line 3: 1 field, the header has 2'),
    ('text\tlabel\nok\tpos\n"written by\ncsv.writer"\tneg\n', 'line 3: 1 field, the header has 2'),  # quoted, 2 lines
])
def test_tsv_wrong_number_of_fields_names_the_line(tmp_path, content, message):
    error = _message(_write(tmp_path / 'bad.tsv', content))
    assert message in error and 'TSV is read literally' in error


def test_tsv_crlf_and_blank_lines(tmp_path):
    "CRLF endings are line endings, not text; blank lines are skipped (as in CSV) but still counted."
    p = _write(tmp_path / 'crlf.tab', 'text\tlabel\r\n"quoted"\tpos\r\n\r\nlast \tneg\r\n\nodd\tmeh\n')
    assert [(x.text, x.label) for x in read_labelled_texts(p, skip_labels=['meh'])] == [
        ('"quoted"', 'pos'), ('last', 'neg')]
    assert 'line 6: unknown label' in _message(p, labels=['pos', 'neg'])


def test_csv_blank_lines_are_skipped_but_counted(tmp_path):
    p = _write(tmp_path / 'blank.csv', 'text,label\n\nok,pos\n\nfine,meh\n')
    assert 'line 5: unknown label' in _message(p, labels=['pos', 'neg'])


# ---- a byte-order mark is accepted in every format, plain and compressed ---------------------------------------------

@pytest.mark.parametrize('compression', COMPRESSIONS)
@pytest.mark.parametrize('name, content', [
    ('bom.csv', 'text,label\r\n"Good, film",pos\r\nBad film,neg\r\n'),
    ('bom.tsv', 'text\tlabel\nGood, film\tpos\nBad film\tneg\n'),
    ('bom.jsonl', '{"text": "Good, film", "label": "pos"}\n{"text": "Bad film", "label": "neg"}\n'),
])
def test_byte_order_mark_is_accepted(tmp_path, name, content, compression):
    p = _write(tmp_path / (name + compression), content, bom=True)
    assert read_labelled_texts(p) == [LabelledText('Good, film', 'pos'), LabelledText('Bad film', 'neg')]


# ---- a CSV row with too few fields says so ---------------------------------------------------------------------------

@pytest.mark.parametrize('content, message', [
    ('text,label\nGood film\nBad,neg\n', 'line 2: 1 field, the header has 2'),
    ('text,label,film\nGood,pos\n', 'line 2: 2 fields, the header has 3'),
    ('text,label\n"a\nb",pos\n"two\nlines"\n', 'line 4: 1 field, the header has 2'),
    ('text,label\nok,pos,extra\n', 'line 2: 3 fields, the header has 2'),
])
def test_csv_wrong_number_of_fields_names_the_line(tmp_path, content, message):
    assert message in _message(_write(tmp_path / 'short.csv', content))


# ---- whatever a writer writes reads back equal (hypothesis) ----------------------------------------------------------

_tricky = st.sampled_from(list('"\',;\\ “”«»') + ['😀', '東京', 'é', '\u00a0', '\u2028', '\x85', '\ufeff', '""'])
_any_char = st.characters(blacklist_categories=('Cs',))                    # surrogates cannot be written as UTF-8
_line_breaks = st.sampled_from(['\n', '\r', '\r\n', '\t'])
_csv_text = st.lists(st.one_of(_tricky, _line_breaks, _any_char), min_size=1, max_size=20).map(''.join)
_tsv_text = st.lists(st.one_of(_tricky, _any_char.filter(lambda c: c not in '\t\r\n')), min_size=1,
                     max_size=20).map(''.join)


def _rows(texts):
    "Rows (text, label, group) for texts that the reader keeps (it strips texts and needs one left)."
    return st.lists(st.tuples(texts.filter(lambda t: t.strip()), st.sampled_from(LABELS), texts | st.just('')),
                    min_size=1, max_size=8)


def _expected(rows):
    return [LabelledText(t.strip(), l, g or None) for t, l, g in rows]


def _read_back(name: str, content: str, bom: bool):
    with tempfile.TemporaryDirectory() as d:
        return read_labelled_texts(_write(Path(d) / name, content, bom), group_column='group')


@pytest.mark.parametrize('compression', COMPRESSIONS)
@settings(max_examples=25, deadline=None)
@given(rows=_rows(_csv_text), bom=st.booleans())
def test_csv_round_trip(rows, bom, compression):
    out = io.StringIO()
    w = csv.writer(out); w.writerow(['text', 'label', 'group']); w.writerows(rows)
    assert _read_back('x.csv' + compression, out.getvalue(), bom) == _expected(rows)


@pytest.mark.parametrize('compression', COMPRESSIONS)
@settings(max_examples=25, deadline=None)
@given(rows=_rows(_tsv_text), bom=st.booleans(), crlf=st.booleans())
def test_tsv_round_trip_keeps_quotes(rows, bom, crlf, compression):
    end = '\r\n' if crlf else '\n'
    content = end.join('\t'.join(r) for r in [('text', 'label', 'group'), *rows]) + end
    assert _read_back('x.tsv' + compression, content, bom) == _expected(rows)


@pytest.mark.parametrize('compression', COMPRESSIONS)
@settings(max_examples=25, deadline=None)
@given(rows=_rows(_csv_text), bom=st.booleans(), ascii=st.booleans())
def test_jsonl_round_trip(rows, bom, ascii, compression):
    content = ''.join(json.dumps({'text': t, 'label': l, 'group': g}, ensure_ascii=ascii) + '\n' for t, l, g in rows)
    assert _read_back('x.jsonl' + compression, content, bom) == _expected(rows)
