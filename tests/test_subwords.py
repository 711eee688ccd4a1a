"""bert_book.subwords from outside: RoBERTa's byte-level BPE and XLM-R's Unigram saved by the book
load in transformers (AutoTokenizer and the fast classes) with the same ids, offsets and word ids;
the folders transformers writes load here; `BertTokenizer.from_pretrained` hands them to
`SubwordTokenizer`; training is repeatable across processes; bad files fail naming the file."""
import json, pickle, subprocess, sys, warnings

import pytest
import tokenizers

from bert_book.alignment import encode_ner, label_list_for
from bert_book.data import load_corpus, load_sample
from bert_book.subwords import SubwordTokenizer, train_bpe, train_unigram, transformers_class
from bert_book.token_classification import split_words
from bert_book.tokenizer import BertTokenizer, TOKENIZER_CLASSES

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    import transformers

TEXTS = ["Zürich's  CAFÉ\tsold croissants, naïvely.", "東京 is big 🏊 http://t.co/x #yyc @cbc", "",
         "It was self… indulgent, and ﬁne.", "A <mask> in the text stays one token.", "x" * 120,
         "Tabs\tand  double  spaces\nand newlines."]
PAIRS = ["Where is Zürich?", "Which city?", "?", "", "Sisyphus.", "Mask it.", "OK"]
WORDS = [["Angela", "Merkel", "visited", "Zürich", "."], ["🏊", "http://t.co/x", "#yyc"], ["x"]]
FAST = {'BPE': transformers.RobertaTokenizerFast, 'Unigram': transformers.XLMRobertaTokenizerFast}


@pytest.fixture(scope='module')
def corpus():
    return load_corpus()[:1500]


@pytest.fixture(scope='module')
def trained(corpus):
    return {'BPE': train_bpe(corpus, 700), 'Unigram': train_unigram(corpus, 700)}


@pytest.fixture(scope='module')
def folders(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp('subwords')
    return {kind: tok.save(root / kind) for kind, tok in trained.items()}


def rows(enc, n):
    "Per sequence: ids, offsets as tuples, word ids."
    return [(enc['input_ids'][i], [tuple(o) for o in enc['offset_mapping'][i]], enc.word_ids(i))
            for i in range(n)]


@pytest.mark.parametrize('kind', ['BPE', 'Unigram'])
def test_autotokenizer_gives_the_same_ids_offsets_and_words(kind, trained, folders):
    ours = trained[kind]
    hf = transformers.AutoTokenizer.from_pretrained(folders[kind])
    hf_words = transformers.AutoTokenizer.from_pretrained(folders[kind], add_prefix_space=True)
    kw = dict(return_offsets_mapping=True)
    assert rows(ours(TEXTS, **kw), len(TEXTS)) == rows(hf(TEXTS, **kw), len(TEXTS))
    assert rows(ours(TEXTS, PAIRS, **kw), len(TEXTS)) == rows(hf(TEXTS, PAIRS, **kw), len(TEXTS))
    assert (rows(ours(WORDS, is_split_into_words=True, **kw), len(WORDS))
            == rows(hf_words(WORDS, is_split_into_words=True, **kw), len(WORDS)))
    padded = ours(TEXTS, PAIRS, padding=True, truncation=True, max_length=12)
    theirs = hf(TEXTS, PAIRS, padding=True, truncation=True, max_length=12)
    for key in ('input_ids', 'attention_mask'): assert padded[key] == theirs[key]
    assert sorted(ours.all_special_ids) == sorted(hf.all_special_ids)
    for ids in ours(TEXTS).input_ids:
        for skip in (False, True):
            kw = dict(skip_special_tokens=skip)
            assert ours.decode(ids, **kw) == hf.decode(ids, **kw)


@pytest.mark.parametrize('kind', ['BPE', 'Unigram'])
def test_fast_class_from_the_file_agrees(kind, trained, folders):
    ours, hf = trained[kind], FAST[kind](tokenizer_file=str(folders[kind] / 'tokenizer.json'))
    assert ours(TEXTS, PAIRS).input_ids == hf(TEXTS, PAIRS).input_ids


def test_the_files_say_what_transformers_needs(trained, folders):
    config = json.loads((folders['BPE'] / 'tokenizer_config.json').read_text())
    assert config['tokenizer_class'] == 'RobertaTokenizer' and config['add_prefix_space'] is False
    roles = ('cls_token', 'sep_token', 'pad_token', 'mask_token')
    assert [config[r] for r in roles] == ['<s>', '</s>', '<pad>', '<mask>']
    assert config['model_max_length'] == 512
    specials = json.loads((folders['Unigram'] / 'special_tokens_map.json').read_text())
    assert specials['bos_token'] == '<s>' and specials['eos_token'] == '</s>'
    # transformers' XLMRobertaTokenizer drops an NFKC normalizer: the generic class reads the file
    unigram_config = json.loads((folders['Unigram'] / 'tokenizer_config.json').read_text())
    assert unigram_config['tokenizer_class'] == 'PreTrainedTokenizerFast'
    plain = train_unigram(load_corpus()[:300], 300, nfkc=False)
    assert transformers_class(plain.backend_tokenizer) == 'XLMRobertaTokenizer'
    hf = transformers.AutoTokenizer.from_pretrained(plain.save(folders['Unigram'].parent / 'plain'))
    assert type(hf).__name__ == 'XLMRobertaTokenizer'
    assert hf(TEXTS).input_ids == plain(TEXTS).input_ids


def test_roberta_layout(trained):
    bpe, uni = trained['BPE'], trained['Unigram']
    for tok in (bpe, uni):
        ids = [tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.unk_token_id]
        assert ids == [0, 1, 2, 3] and (tok.bos_token_id, tok.eos_token_id) == (0, 2)
        assert tok.mask_token_id == tok.vocab_size - 1
        assert [tok.num_special_tokens_to_add(pair) for pair in (False, True)] == [2, 4]
        enc = tok("a", "b")
        assert enc.tokens()[0] == '<s>' and enc.tokens().count('</s>') == 3
        assert set(enc.token_type_ids) == {0}
        assert tok("a <mask> b").input_ids.count(tok.mask_token_id) == 1
    assert bpe.unk_token_id not in bpe.encode(TEXTS[1])            # bytes: nothing is unknown
    assert bpe.decode(bpe.encode(TEXTS[0]), skip_special_tokens=True) == TEXTS[0]
    assert uni.tokenize('…') == uni.tokenize('...')                # NFKC


def test_bert_tokenizer_hands_the_folders_over(trained, folders):
    assert TOKENIZER_CLASSES['BPE'] is TOKENIZER_CLASSES['Unigram'] is SubwordTokenizer
    for kind, folder in folders.items():
        loaded = BertTokenizer.from_pretrained(folder)
        assert type(loaded) is SubwordTokenizer and loaded.model_type == kind
        kw = dict(return_offsets_mapping=True, return_word_ids=True,
                  return_special_tokens_mask=True)
        assert loaded(TEXTS, PAIRS, **kw) == trained[kind](TEXTS, PAIRS, **kw)
        assert loaded(WORDS, is_split_into_words=True).input_ids == \
               trained[kind](WORDS, is_split_into_words=True).input_ids
        again = pickle.loads(pickle.dumps(loaded))
        assert again(WORDS, is_split_into_words=True, padding=True).input_ids == \
               loaded(WORDS, is_split_into_words=True, padding=True).input_ids


def test_pre_split_words_get_the_prefix_space(trained):
    bpe = trained['BPE']
    assert bpe.add_prefix_space is False
    words = bpe(WORDS[0], is_split_into_words=True, add_special_tokens=False).tokens()
    assert words[0].startswith('Ġ') and not bpe.tokenize('Angela Merkel')[0].startswith('Ġ')
    spaced = SubwordTokenizer(bpe.backend_tokenizer, add_prefix_space=True)
    assert spaced.tokenize('Angela Merkel')[0].startswith('Ġ')
    assert bpe.add_prefix_space is False   # the copy did not change the original


def test_folder_written_by_transformers_loads(trained, folders, tmp_path):
    "transformers' own save_pretrained (AddedToken objects, added_tokens_decoder) reads back."
    for kind in ('BPE', 'Unigram'):
        hf = transformers.AutoTokenizer.from_pretrained(folders[kind])
        hf.save_pretrained(tmp_path / kind)
        loaded = BertTokenizer.from_pretrained(tmp_path / kind)
        assert loaded(TEXTS, PAIRS).input_ids == hf(TEXTS, PAIRS).input_ids
        assert loaded.mask_token_id == hf.mask_token_id and loaded.pad_token_id == hf.pad_token_id


def test_alignment_and_words(trained):
    sentences = load_sample('train')[:40]
    label2id = {t: i for i, t in enumerate(label_list_for(sentences))}
    for kind, mark in [('BPE', 'Ġ'), ('Unigram', '▁')]:
        tok = trained[kind]
        for e in encode_ner(sentences, tok, label2id).examples:
            ws = e['word_ids']
            starts = [i for i, w in enumerate(ws) if w is not None and (i == 0 or ws[i - 1] != w)]
            assert [i for i, label in enumerate(e['labels']) if label != -100] == starts
            firsts = tok.convert_ids_to_tokens([e['input_ids'][i] for i in starts])
            assert all(t.startswith(mark) for t in firsts)
        text = 'Angela  Merkel\nvisited Zürich.'
        (_, spans), = split_words(tok, [text])
        assert all(text[a:b] and text[a:b] == text[a:b].strip() for a, b in spans)


TRAIN = """
import hashlib, json, sys
from bert_book.data import load_corpus
from bert_book.subwords import train_bpe, train_unigram
tok = (train_bpe if sys.argv[1] == 'BPE' else train_unigram)(load_corpus()[:800], 500)
print(hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest())
"""

@pytest.mark.parametrize('kind', ['BPE', 'Unigram'])
def test_training_is_repeatable_across_processes(kind):
    "tokenizers' Unigram trainer orders some pieces by hash: train_unigram puts them in one order."
    digests = {subprocess.run([sys.executable, '-c', TRAIN, kind], capture_output=True, text=True,
                              check=True).stdout for _ in range(2)}
    assert len(digests) == 1


def write(path, text):
    path.write_text(text, encoding='utf-8')
    return path


def test_bad_files_name_the_file(trained, folders, tmp_path):
    tokenizers.Tokenizer(tokenizers.models.WordLevel({'<unk>': 0}, unk_token='<unk>')).save(
        str(tmp_path / 'tokenizer.json'))
    with pytest.raises(ValueError, match=r'tokenizer\.json: the model is WordLevel'):
        BertTokenizer.from_pretrained(tmp_path)
    (tmp_path / 'bpe').mkdir()
    bare = tokenizers.Tokenizer(tokenizers.models.BPE({'<s>': 0, '<pad>': 1, 'a': 2}, merges=[]))
    bare.save(str(tmp_path / 'bpe' / 'tokenizer.json'))
    with pytest.raises(ValueError, match=r"bpe/tokenizer\.json: the vocabulary lacks the special"):
        BertTokenizer.from_pretrained(tmp_path / 'bpe')
    mapped = trained['BPE'].save(tmp_path / 'mapped')
    write(mapped / 'tokenizer_config.json', '{}')
    write(mapped / 'special_tokens_map.json', json.dumps({'pad_token': {'content': '[PAD]'}}))
    with pytest.raises(ValueError, match=r"tokens_map\.json: pad_token '\[PAD\]' is not a token"):
        BertTokenizer.from_pretrained(mapped)
    write(mapped / 'special_tokens_map.json', '{}')
    write(mapped / 'tokenizer_config.json', json.dumps({'mask_token': ['<mask>']}))
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: mask_token must be a token"):
        BertTokenizer.from_pretrained(mapped)
    write(mapped / 'tokenizer_config.json', '{"mask_token": ')
    with pytest.raises(ValueError, match=r'tokenizer_config\.json: not valid JSON at line 1'):
        BertTokenizer.from_pretrained(mapped)
    with pytest.raises(ValueError, match='do_lower_case=False is a setting'):
        BertTokenizer.from_pretrained(folders['BPE'], do_lower_case=False)
    with pytest.raises(ValueError, match="unknown special-token roles"):
        SubwordTokenizer(trained['BPE'].backend_tokenizer, special_tokens={'mask': '<mask>'})
    with pytest.raises(ValueError, match='vocab_size must be at least'):
        train_bpe(['a b c'], 100)
    with pytest.raises(TypeError, match=r'texts\[1\] is int'):
        train_unigram(['fine', 3])


def legacy_folder(tok, folder, config: dict | None = None, special_map: dict | None = None):
    "`tok`'s BPE as vocab.json (with <mask>, as RoBERTa's) and merges.txt, and the settings given; no tokenizer.json."
    folder.mkdir()
    tok.backend_tokenizer.model.save(str(folder))
    (folder / 'vocab.json').write_text(json.dumps(tok.backend_tokenizer.get_vocab()))
    if config is not None: (folder / 'tokenizer_config.json').write_text(json.dumps(config))
    if special_map is not None: (folder / 'special_tokens_map.json').write_text(json.dumps(special_map))
    return folder


@pytest.mark.parametrize('settings', ['written by save', 'class only', 'special_tokens_map'])
def test_vocab_and_merges_folders_read_as_transformers_reads_them(settings, trained, folders, tmp_path):
    "Where the mask's lstrip comes from differs; ids, offsets and words agree with transformers' in each case."
    saved = json.loads((folders['BPE'] / 'tokenizer_config.json').read_text())
    config, special_map = {'written by save': (saved, None),
                           'class only': ({'tokenizer_class': 'RobertaTokenizer'}, None),
                           'special_tokens_map': ({'tokenizer_class': 'RobertaTokenizer'},
                                                  {'mask_token': {'content': '<mask>', 'lstrip': True}})}[settings]
    folder = legacy_folder(trained['BPE'], tmp_path / 'legacy', config, special_map)
    ours = BertTokenizer.from_pretrained(folder)
    assert type(ours) is SubwordTokenizer and ours.model_type == 'BPE'
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(hf).__name__ == 'RobertaTokenizer'
    hf_words = transformers.AutoTokenizer.from_pretrained(folder, add_prefix_space=True)
    texts = TEXTS + ['a <mask> b', 'x<mask>y', ' <mask>']
    kw = dict(return_offsets_mapping=True)
    assert rows(ours(texts, **kw), len(texts)) == rows(hf(texts, **kw), len(texts))
    assert rows(ours(TEXTS, PAIRS, **kw), len(TEXTS)) == rows(hf(TEXTS, PAIRS, **kw), len(TEXTS))
    assert (rows(ours(WORDS, is_split_into_words=True, **kw), len(WORDS))
            == rows(hf_words(WORDS, is_split_into_words=True, **kw), len(WORDS)))
    if settings == 'written by save':   # the same folder with a tokenizer.json: the same tokenizer
        assert ours(texts).input_ids == trained['BPE'](texts).input_ids


def test_vocab_and_merges_bad_files_say_which(trained, tmp_path):
    folder = legacy_folder(trained['BPE'], tmp_path / 'a', {'tokenizer_class': 'RobertaTokenizer'})
    (folder / 'merges.txt').unlink()
    with pytest.raises(FileNotFoundError, match=r"vocab.json: a byte-level BPE's vocab.json needs merges.txt"):
        BertTokenizer.from_pretrained(folder)
    folder = legacy_folder(trained['BPE'], tmp_path / 'b', {'tokenizer_class': 'RobertaTokenizer'})
    (folder / 'merges.txt').write_text('#version: 0.2\nĠt he\nno-such-piece zz\n')
    with pytest.raises(ValueError, match=r"vocab.json and merges.txt: not a BPE vocabulary and merges"):
        BertTokenizer.from_pretrained(folder)
    folder = legacy_folder(trained['BPE'], tmp_path / 'c', {'mask_token': '<nomask>'})
    with pytest.raises(ValueError, match=r"tokenizer_config.json: mask_token '<nomask>' is not a token of .*vocab.json"):
        BertTokenizer.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"do_lower_case=True is a setting of BERT's normalizer"):
        BertTokenizer.from_pretrained(folder, do_lower_case=True)


def test_engine_reads_a_model_folder_of_vocab_and_merges(trained, tmp_path):
    "A RoBERTa classifier whose folder holds vocab.json and merges.txt serves as the same folder with tokenizer.json."
    import torch
    import bert_book as bb
    tok = trained['BPE']
    torch.manual_seed(0)
    model = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
        vocab_size=tok.vocab_size, hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=tok.model_max_length + 2, pad_token_id=tok.pad_token_id, num_labels=2))
    model.save_pretrained(tmp_path / 'full')
    tok.save(tmp_path / 'full')
    legacy = legacy_folder(tok, tmp_path / 'legacy', json.loads((tmp_path / 'full' / 'tokenizer_config.json').read_text()))
    for name in ('config.json', 'model.safetensors'): (legacy / name).write_bytes((tmp_path / 'full' / name).read_bytes())
    text = 'A <mask> of a film, said nobody.'
    a, b = bb.load(tmp_path / 'full', device='cpu'), bb.load(legacy, device='cpu')
    assert type(b.tokenizer) is SubwordTokenizer
    assert a.classify(text) == b.classify(text)
