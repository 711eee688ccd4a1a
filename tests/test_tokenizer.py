"""bert_book.tokenizer from outside: a saved folder loads in `tokenizers` and `transformers` with the same ids and offsets,
offsets point at the exact characters of the original text, training is repeatable, and bad input fails with a message
that says what and where."""
import json, pickle, warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import tokenizers
from hypothesis import HealthCheck, given, settings, strategies as st

from bert_book.tokenizer import BertTokenizer, WhitespaceTokenizer, SPECIAL_TOKENS, train_wordpiece, wordpiece_split

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    import transformers

CORPUS = [
    "The old town of Zürich lies where the river Limmat leaves the lake.",
    "We drank a café crème near the station; the train to Genève was late!",
    "Naïve tokenizers map every unknown word to one id — a bad idea.",
    "WordPiece splits rare words into pieces: token, ##izer, ##s.",
    "Straße, Größe and Übergröße are German words with ß and umlauts.",
    "Ελληνικά γράμματα και кириллица тоже встречаются в тексте.",
    "東京 and 北京 are capitals; 中文 characters are split one by one.",
    "Numbers like 3.14, 2019 and 8:15 appear in text too (sometimes in brackets).",
    "She said: \"Don't forget the umbrella,\" and left at 6 o'clock.",
    "Researchers trained, retrained and evaluated the models on held-out data.",
    "The models were evaluated with precision, recall and F1 scores.",
    "Every sentence is split into words, and every word into pieces.",
    "Curie, Einstein and Noether worked in Paris, Bern and Göttingen.",
    "Accents like é, è, ê, ë, à, ç and ñ are stripped by the uncased model.",
    "Tabs\tand  double  spaces\nand newlines are all whitespace.",
] * 3
TEXTS = ["Zürich's  CAFÉ\tsold croissants, naïvely.", "東京 is big.", "", "   ", "Ωmega and ΣΙΣΥΦΟΣ!",
         "A [MASK] in the text stays a mask.", "x" * 120, "Übergröße 3.14 — done?!"]
PAIRS = ["Where is Zürich?", "Which city?", "?", "", "Sisyphus.", "Mask it.", "Long word.", "OK"]


@pytest.fixture(scope='session')
def tok():
    return train_wordpiece(CORPUS, vocab_size=300)

@pytest.fixture(scope='session')
def folder(tok, tmp_path_factory):
    return tok.save(tmp_path_factory.mktemp('tok') / 'wordpiece')

@pytest.fixture(scope='session')
def hf(folder):
    return transformers.AutoTokenizer.from_pretrained(folder)

@pytest.fixture(scope='session')
def cased(tmp_path_factory):
    tok = train_wordpiece(CORPUS, vocab_size=300, lowercase=False)
    return tok, tok.save(tmp_path_factory.mktemp('tok') / 'cased')


def as_lists(enc, key):
    "A field of a transformers or bert_book encoding as nested lists of ints or tuples."
    rows = enc[key]
    if key == 'offset_mapping': return [[tuple(o) for o in row] for row in rows] if rows and isinstance(rows[0], list) else [tuple(o) for o in rows]
    return rows

# --- the saved folder --------------------------------------------------------------------------------------------

def test_folder_holds_the_four_files(tok, folder):
    assert sorted(p.name for p in folder.iterdir()) == ['special_tokens_map.json', 'tokenizer.json',
                                                        'tokenizer_config.json', 'vocab.txt']
    config = json.loads((folder / 'tokenizer_config.json').read_text())
    assert config['tokenizer_class'] == 'BertTokenizer' and config['do_lower_case'] is True
    assert config['model_max_length'] == tok.model_max_length
    lines = (folder / 'vocab.txt').read_text(encoding='utf-8').split('\n')[:-1]
    assert lines == tok.convert_ids_to_tokens(list(range(tok.vocab_size)))
    assert lines[:5] == SPECIAL_TOKENS
    assert json.loads((folder / 'special_tokens_map.json').read_text())['mask_token'] == '[MASK]'

def test_tokenizers_reads_tokenizer_json(tok, folder):
    raw = tokenizers.Tokenizer.from_file(str(folder / 'tokenizer.json'))
    singles = raw.encode_batch(TEXTS)
    ours = tok(TEXTS, return_offsets_mapping=True)
    assert [e.ids for e in singles] == ours['input_ids']
    assert [e.offsets for e in singles] == ours['offset_mapping']
    pairs = raw.encode_batch(list(zip(TEXTS, PAIRS)))
    ours = tok(TEXTS, PAIRS)
    assert [e.ids for e in pairs] == ours['input_ids']
    assert [e.type_ids for e in pairs] == ours['token_type_ids']

@pytest.mark.parametrize('case', [
    dict(texts=TEXTS[0]),
    dict(texts=TEXTS),
    dict(texts=TEXTS, padding=True),
    dict(texts=TEXTS, text_pairs=PAIRS),
    dict(texts=TEXTS, text_pairs=PAIRS, padding=True, truncation=True, max_length=12),
    dict(texts=TEXTS, text_pairs=PAIRS, padding='max_length', truncation='only_first', max_length=20),
    dict(texts=TEXTS[:3], padding='max_length', max_length=40),
    dict(texts=TEXTS, truncation=True, max_length=16, padding=True, pad_to_multiple_of=8),
    dict(texts=[t.split() for t in TEXTS], is_split_into_words=True, padding=True),
    dict(texts=TEXTS[0].split(), is_split_into_words=True),
], ids=['single', 'batch', 'padded', 'pairs', 'pairs-truncated', 'only-first', 'max-length', 'multiple-of-8',
        'words', 'one-word-list'])
def test_transformers_gives_the_same_encoding(tok, hf, case):
    ours = tok(**case, return_offsets_mapping=True, return_special_tokens_mask=True, return_word_ids=True)
    hf_case = {{'texts': 'text', 'text_pairs': 'text_pair'}.get(k, k): v for k, v in case.items()}
    theirs = hf(**hf_case, return_offsets_mapping=True, return_special_tokens_mask=True)
    for key in ['input_ids', 'token_type_ids', 'attention_mask', 'special_tokens_mask', 'offset_mapping']:
        assert as_lists(ours, key) == as_lists(theirs, key), key
    single = isinstance(case['texts'], str) or (case.get('is_split_into_words') and isinstance(case['texts'][0], str))
    word_ids = [ours['word_ids']] if single else ours['word_ids']
    assert word_ids == [theirs.word_ids(i) for i in range(len(word_ids))] == [ours.word_ids(i) for i in range(len(word_ids))]
    assert [ours.tokens(i) for i in range(len(word_ids))] == [theirs.tokens(i) for i in range(len(word_ids))]

def test_transformers_loads_a_bert_tokenizer(tok, hf):
    assert type(hf).__name__ == 'BertTokenizer'
    assert hf.do_lower_case is True and hf.model_max_length == tok.model_max_length
    assert [hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id] == \
           [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id]
    assert hf.tokenize(TEXTS[0]) == tok.tokenize(TEXTS[0])
    assert len(hf) == tok.vocab_size

@pytest.mark.parametrize('name', ['vocab.txt', 'tokenizer.json', None])
def test_our_loaders_give_the_same_ids(tok, folder, name):
    loaded = BertTokenizer.from_pretrained(folder) if name is None else BertTokenizer.from_file(folder / name)
    kw = dict(padding=True, return_offsets_mapping=True, return_word_ids=True)
    assert loaded(TEXTS, PAIRS, **kw) == tok(TEXTS, PAIRS, **kw)
    assert (loaded.vocab_size, loaded.do_lower_case, loaded.model_max_length) == (tok.vocab_size, True, 512)

def test_cased_tokenizer_keeps_its_case(cased):
    tok, folder = cased
    assert tok.do_lower_case is False and 'Z' in tok.get_vocab()
    text = "Zürich Café and zürich café"
    for loaded in [BertTokenizer.from_file(folder / 'vocab.txt'), BertTokenizer.from_pretrained(folder),
                   transformers.AutoTokenizer.from_pretrained(folder)]:
        assert loaded.do_lower_case is False
        assert loaded(text)['input_ids'] == tok.encode(text)
    assert tok.encode("Zürich") != tok.encode("zürich")

def test_google_layout_vocab_reads_special_ids_from_the_file(tmp_path):
    "Google's vocab.txt puts [PAD] at 0 and [UNK] [CLS] [SEP] [MASK] at 100..103: nothing may assume 0..4."
    tokens = ['[PAD]'] + [f'[unused{i}]' for i in range(99)] + ['[UNK]', '[CLS]', '[SEP]', '[MASK]'] + \
             list('abcdefghijklmnopqrstuvwxyz.,') + ['##' + c for c in 'abcdefghijklmnopqrstuvwxyz'] + ['the', 'lake']
    (tmp_path / 'vocab.txt').write_text('\n'.join(tokens) + '\n', encoding='utf-8')
    ours = BertTokenizer.from_file(tmp_path / 'vocab.txt')
    theirs = transformers.BertTokenizer(vocab=str(tmp_path / 'vocab.txt'))
    assert (ours.pad_token_id, ours.unk_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id) == (0, 100, 101, 102, 103)
    texts = ["The lakes, [MASK] lake.", "Zürich?", ""]
    assert ours(texts, padding=True)['input_ids'] == theirs(texts, padding=True)['input_ids']
    assert ours.tokenize("the lakes [MASK]") == ['the', 'lake', '##s', '[MASK]']

def test_reads_a_folder_that_transformers_saved(tok, tmp_path):
    "A checkpoint folder written by transformers (tokenizer.json + tokenizer_config.json) loads with the same ids."
    theirs = transformers.BertTokenizer(vocab=tok.get_vocab(), do_lower_case=True, model_max_length=128)
    theirs.save_pretrained(tmp_path)
    ours = BertTokenizer.from_pretrained(tmp_path)
    assert ours.model_max_length == 128 and ours.do_lower_case is True
    kw = dict(padding=True, return_offsets_mapping=True)
    assert as_lists(ours(TEXTS, **kw), 'input_ids') == as_lists(theirs(TEXTS, **kw), 'input_ids')
    assert as_lists(ours(TEXTS, **kw), 'offset_mapping') == as_lists(theirs(TEXTS, **kw), 'offset_mapping')

# --- offsets -----------------------------------------------------------------------------------------------------

def piece_text(token):
    return token[2:] if token.startswith('##') else token

def check_offsets(tok, text):
    "Every text token's offsets cover exactly the characters it was made from, once normalized."
    normalize = tok.backend_tokenizer.normalizer.normalize_str
    enc = tok(text, return_offsets_mapping=True, return_word_ids=True)
    tokens = tok.convert_ids_to_tokens(enc['input_ids'])
    words = {}
    for t, w, (s, e) in zip(tokens, enc['word_ids'], enc['offset_mapping']):
        assert 0 <= s <= e <= len(text)
        if w is None: assert (s, e) == (0, 0) and t in SPECIAL_TOKENS; continue
        if t in SPECIAL_TOKENS and t != '[UNK]': assert text[s:e] == t; continue   # a special the text itself holds
        assert e > s, (t, s, e)
        words.setdefault(w, []).append((t, s, e))
    for pieces in words.values():
        start, end = min(s for _, s, _ in pieces), max(e for _, _, e in pieces)
        if any(t == '[UNK]' for t, _, _ in pieces):
            assert len(pieces) == 1   # an unknown word is one [UNK], never [UNK] plus pieces
            continue
        assert ''.join(piece_text(t) for t, _, _ in pieces) == normalize(text[start:end]).strip()
    return tokens, enc['offset_mapping']

def test_offsets_on_accents_and_spaces(tok):
    text = "  Zürich's  CAFÉ\tsold   croissants, naïvely…  "
    tokens, offsets = check_offsets(tok, text)
    normalize = tok.backend_tokenizer.normalizer.normalize_str
    for t, (s, e) in zip(tokens, offsets):
        if t not in SPECIAL_TOKENS: assert normalize(text[s:e]) == piece_text(t), (t, text[s:e])
    enc = tok(text, return_offsets_mapping=True, return_word_ids=True)
    spans = {}
    for (s, e), w in zip(enc['offset_mapping'], enc['word_ids']):
        if w is not None: spans[w] = (min(s, spans.get(w, (s, e))[0]), e)
    assert [text[s:e] for s, e in spans.values()] == ['Zürich', "'", 's', 'CAFÉ', 'sold', 'croissants', ',', 'naïvely', '…']

LETTERS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"()-\t\n")
ACCENTED = list("àáâäçèéêëìíîïñòóôöùúûüÿÀÉÖÜßøæ") + ['\u00a0', '\u3000', 'Ω', 'Σ', 'λ', 'д', 'Ж', '中', '京',
                                                       '\u0301', '\u200b', '😀', 'ǅ', 'İ']

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(LETTERS + ACCENTED), max_size=80))
def test_offsets_map_back_to_the_original_characters(tok, text):
    check_offsets(tok, text)

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=40))
def test_offsets_on_any_unicode_text(tok, text):
    check_offsets(tok, text)

@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.sampled_from(LETTERS + ACCENTED), max_size=30), min_size=1, max_size=4))
def test_random_batches_match_transformers(tok, hf, texts):
    ours = tok(texts, padding=True, return_offsets_mapping=True)
    theirs = hf(texts, padding=True, return_offsets_mapping=True)
    for key in ['input_ids', 'attention_mask', 'offset_mapping']:
        assert as_lists(ours, key) == as_lists(theirs, key)

# --- behaviour ---------------------------------------------------------------------------------------------------

def test_training_is_repeatable():
    "tokenizers' trainer alone is not (huggingface/tokenizers#1794); train_wordpiece must be."
    vocabs = [train_wordpiece(CORPUS, vocab_size=v).get_vocab() for v in (250, 250, 250)]
    assert vocabs[0] == vocabs[1] == vocabs[2]
    assert train_wordpiece(iter(CORPUS), vocab_size=250).get_vocab() == vocabs[0]  # any iterable, same result

def test_special_ids_and_vocab(tok):
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [0, 1, 2, 3, 4]
    assert tok.all_special_tokens == SPECIAL_TOKENS and tok.all_special_ids == [0, 1, 2, 3, 4]
    assert tok.vocab_size == len(tok) == len(tok.get_vocab()) <= 300
    assert tok.convert_tokens_to_ids(['[MASK]', 'the', 'no-such-token']) == [4, tok.get_vocab()['the'], 1]
    assert tok.convert_ids_to_tokens(torch.tensor(4)) == '[MASK]'

def test_empty_text_is_cls_sep(tok):
    assert tok("")['input_ids'] == [tok.cls_token_id, tok.sep_token_id]
    assert tok.encode("   ") == [tok.cls_token_id, tok.sep_token_id]
    assert tok([""], return_tensors='pt')['input_ids'].tolist() == [[tok.cls_token_id, tok.sep_token_id]]

def test_mask_in_text_is_one_token_and_unknown_words_are_unk(tok):
    tokens = tok.tokenize("the [MASK] lake")
    assert tokens[:2] == ['the', '[MASK]'] and tokens.count('[MASK]') == 1
    assert '[MASK]' not in tok.tokenize("the [mask] lake")   # only the exact spelling is the special token
    assert tok.tokenize("😀") == ['[UNK]']
    ws = WhitespaceTokenizer.from_texts(CORPUS)
    ids = ws.encode("the quantumchromodynamics [MASK]")
    assert ids == [ws.cls_token_id, ws.vocab['the'], ws.unk_token_id, ws.mask_token_id, ws.sep_token_id]
    assert ws.unk_token_id != ws.mask_token_id

def test_wordpiece_split_matches_the_rust_model(tok):
    vocab, model = tok.get_vocab(), tok.backend_tokenizer.model
    pre, norm = tok.backend_tokenizer.pre_tokenizer, tok.backend_tokenizer.normalizer
    words = {w for t in CORPUS + TEXTS for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))}
    for w in words: assert wordpiece_split(w, vocab) == [t.value for t in model.tokenize(w)], w

def test_tensors(tok):
    enc = tok(TEXTS, PAIRS, padding=True, return_tensors='pt', return_offsets_mapping=True, return_word_ids=True,
              return_special_tokens_mask=True)
    B, T = len(TEXTS), max(len(ids) for ids in tok(TEXTS, PAIRS)['input_ids'])
    for key in ['input_ids', 'token_type_ids', 'attention_mask', 'special_tokens_mask', 'word_ids']:
        assert enc[key].shape == (B, T) and enc[key].dtype == torch.long, key
    assert enc.offset_mapping.shape == (B, T, 2)
    assert (enc['word_ids'][enc.special_tokens_mask.bool()] == -1).all()
    assert (enc.input_ids[enc.attention_mask == 0] == tok.pad_token_id).all()
    single = tok(TEXTS[0], return_tensors='pt')
    assert single['input_ids'].shape == (1, len(tok.encode(TEXTS[0])))
    assert enc.to('cpu') is enc
    assert tok.batch_decode(enc.input_ids, skip_special_tokens=True)[1] == \
           tok.decode(tok.encode(TEXTS[1], PAIRS[1]), skip_special_tokens=True)
    empty = tok([], return_tensors='pt')
    assert empty['input_ids'].shape == (0, 0)

def test_truncation_keeps_specials_and_max_length(tok):
    enc = tok(TEXTS, PAIRS, truncation=True, max_length=10)
    for ids in enc['input_ids']:
        assert len(ids) <= 10 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    long = tok("word " * 1000, truncation=True)['input_ids']
    assert len(long) == tok.model_max_length

def test_pickles_and_serves_threads(tok):
    again = pickle.loads(pickle.dumps(tok))
    assert again(TEXTS, padding=True) == tok(TEXTS, padding=True)
    calls = [dict(padding=True), dict(truncation=True, max_length=5), dict(), dict(padding='max_length', max_length=64)] * 25
    expected = [tok(TEXTS, **kw)['input_ids'] for kw in calls]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda kw: tok(TEXTS, **kw)['input_ids'], calls))
    assert got == expected

def test_the_callers_backend_is_not_changed(tok):
    backend = tokenizers.Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.post_processor = None
    wrapped = BertTokenizer(backend)
    assert backend.post_processor is None
    assert wrapped.encode("the lake") == tok.encode("the lake")

# --- bad input ---------------------------------------------------------------------------------------------------

def write(path, text):
    path.write_text(text, encoding='utf-8'); return path

@pytest.mark.parametrize('make, exc, message', [
    (lambda d: d / 'nowhere', FileNotFoundError, 'no tokenizer folder at'),
    (lambda d: (d / 'empty').mkdir() or d / 'empty', FileNotFoundError, 'holds no tokenizer file: none of tokenizer.json, vocab.txt'),
    (lambda d: write(d / 'tokenizer.json', '{"version": "1.0",\n "model": '), ValueError, 'tokenizer.json: not valid tokenizer JSON at line 2'),
    (lambda d: write(d / 'tokenizer.json', '{"version": "1.0", "model": {"type": "Nonsense"}}'), ValueError,
     'tokenizer.json: not a tokenizer.json that tokenizers can read'),
    (lambda d: write(d / 'vocab.txt', '[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nlake\nthe\n'), ValueError,
     "vocab.txt, line 8: token 'the' repeats line 6"),
    (lambda d: write(d / 'vocab.txt', '[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n'), ValueError, "lacks the special tokens ['[MASK]']"),
    (lambda d: write(d / 'vocab.txt', '[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n[MASK]\n'), ValueError, 'vocab.txt, line 3: empty token'),
    (lambda d: write(d / 'vocab.txt', '[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n') and
               write(d / 'tokenizer_config.json', '{"do_lower_case": tru}') and d, ValueError,
     'tokenizer_config.json: not valid JSON at line 1'),
], ids=['missing-folder', 'empty-folder', 'corrupt-json', 'not-a-tokenizer', 'duplicate-token', 'missing-special',
        'empty-line', 'corrupt-config'])
def test_bad_files(tmp_path, make, exc, message):
    path = make(tmp_path)
    with pytest.raises(exc, match=None) as info: BertTokenizer.from_pretrained(path)
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value)

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='no tokenizer file at'): BertTokenizer.from_file(tmp_path / 'vocab.txt')

def test_tokenizer_json_of_another_model(tmp_path):
    "A model no class is registered for (bert_book.subwords registers BPE and Unigram)."
    other = tokenizers.Tokenizer(tokenizers.models.WordLevel({'[UNK]': 0}, unk_token='[UNK]'))
    other.save(str(tmp_path / 'tokenizer.json'))
    with pytest.raises(ValueError, match='the model is WordLevel, but a BERT tokenizer needs'):
        BertTokenizer.from_pretrained(tmp_path)

def test_config_that_contradicts_the_tokenizer(tok, tmp_path):
    tok.save(tmp_path)
    write(tmp_path / 'tokenizer_config.json', '{"do_lower_case": false}')
    with pytest.raises(ValueError, match='lowercase=True, but do_lower_case=False'): BertTokenizer.from_pretrained(tmp_path)

@pytest.mark.parametrize('call, exc, message', [
    (lambda t: t(["fine", 42]), TypeError, 'texts[1] is int, expected str'),
    (lambda t: t(None), TypeError, 'texts must be a str or a list of str, got NoneType'),
    (lambda t: t(b"bytes"), TypeError, 'got bytes'),
    (lambda t: t([["a", "b"]]), TypeError, 'texts[0] is list, expected str (pass is_split_into_words=True'),
    (lambda t: t([["a"], ["b", 3]], is_split_into_words=True), TypeError, 'texts[1][1] is int, expected str'),
    (lambda t: t("a text", is_split_into_words=True), TypeError, 'when is_split_into_words=True, got str'),
    (lambda t: t(["a", "b"], ["only one"]), ValueError, 'text_pairs has 1 texts but texts has 2'),
    (lambda t: t("one", ["a", "b"]), ValueError, 'text_pairs has 2 texts but texts has 1 text'),
    (lambda t: t(["fine", "x"], ["ok", None]), TypeError, 'text_pairs[1] is NoneType'),
    (lambda t: t(["a", "b c d e f g"], max_length=4), ValueError,
     'texts[1] is 8 tokens long, more than max_length=4; pass truncation=True'),
    (lambda t: t("a b c", padding='max_length', max_length=3), ValueError, 'texts[0] is 5 tokens long, more than max_length=3'),
    (lambda t: t("a b c", "d e f", truncation=True, max_length=3), ValueError, 'leaves no room for text after the 3 special'),
    (lambda t: t("a", truncation=True, max_length=0), ValueError, 'max_length must be a positive int'),
    (lambda t: t("a", padding='maybe'), ValueError, "padding='maybe' is not one of"),
    (lambda t: t("a", truncation='sometimes'), ValueError, "truncation='sometimes' is not one of"),
    (lambda t: t("a", return_tensors='np'), ValueError, "return_tensors='np'"),
    (lambda t: t(["a", "a b c"], return_tensors='pt'), ValueError, 'lengths 3 to 5; pass padding=True'),
    (lambda t: t("a", pad_to_multiple_of=8), ValueError, 'pad_to_multiple_of=8 needs padding'),
    (lambda t: t("a", padding=True, truncation=True, max_length=6, pad_to_multiple_of=8), ValueError,
     'max_length=6 is not a multiple of pad_to_multiple_of=8'),
    (lambda t: t.decode([2, 5, 10 ** 6]), ValueError, 'ids[2]=1000000 is outside the vocabulary'),
    (lambda t: t.decode(torch.zeros(2, 2, dtype=torch.long)), ValueError, 'ids must be 1-D'),
    (lambda t: t.tokenize(["a list"]), TypeError, 'text is list, expected str'),
    (lambda t: BertTokenizer(t.backend_tokenizer, model_max_length=0), ValueError, 'model_max_length must be a positive int'),
    (lambda t: BertTokenizer("not a tokenizer"), TypeError, 'expected a tokenizers.Tokenizer, got str'),
], ids=lambda x: x if isinstance(x, str) else '')
def test_bad_calls(tok, call, exc, message):
    with pytest.raises(exc) as info: call(tok)
    assert message in str(info.value)

@pytest.mark.parametrize('kwargs, exc, message', [
    (dict(texts=["fine", b"bytes"]), TypeError, 'texts[1] is bytes, expected str'),
    (dict(texts="one long string"), TypeError, 'not a single str'),
    (dict(texts=[]), ValueError, 'no characters to learn a vocabulary from'),
    (dict(texts=["", "  "]), ValueError, 'no characters to learn a vocabulary from'),
    (dict(texts=CORPUS, vocab_size=3), ValueError, 'vocab_size must be an int >= 6'),
    (dict(texts=CORPUS, min_frequency=0), ValueError, 'min_frequency must be an int >= 1'),
], ids=['bytes', 'str', 'empty', 'blank', 'vocab-size', 'min-frequency'])
def test_bad_training_input(kwargs, exc, message):
    with pytest.raises(exc) as info: train_wordpiece(**kwargs)
    assert message in str(info.value)

def test_whitespace_tokenizer_bad_input():
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[UNK\]'\]"):
        WhitespaceTokenizer({'[PAD]': 0, '[CLS]': 1, '[SEP]': 2, '[MASK]': 3})
    ws = WhitespaceTokenizer.from_texts(["a b"])
    with pytest.raises(ValueError, match='id 99 is outside the vocabulary'): ws.decode([1, 99])
    with pytest.raises(TypeError, match='texts\\[0\\] is int'): WhitespaceTokenizer.from_texts([3])
