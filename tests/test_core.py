"""bert_book.core seen from outside: devices, seeding, BertConfig and its config.json."""
import json
import pytest
import torch
import transformers

from bert_book.core import BertConfig, get_device, get_activation, seed_everything


def test_get_device_explicit_and_checked(monkeypatch):
    assert get_device('cpu') == torch.device('cpu')
    monkeypatch.setenv('BERT_BOOK_DEVICE', 'cpu')
    assert get_device() == torch.device('cpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='CUDA is not available'):
            get_device('cuda:0')
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        get_device('gpu0')


def test_seed_everything_repeats():
    g1 = seed_everything(7)
    a = torch.rand(4), torch.rand(2, generator=g1)
    g2 = seed_everything(7)
    b = torch.rand(4), torch.rand(2, generator=g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_exact_gelu_is_the_default():
    x = torch.tensor([-1.0, 0.5, 2.0])
    assert torch.allclose(get_activation(BertConfig().hidden_act)(x), x * 0.5 * (1 + torch.erf(x / 2 ** 0.5)))


def test_defaults_are_transformers_defaults():
    ours, theirs = BertConfig(), transformers.BertConfig()
    for name in ('vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size',
                 'hidden_act', 'hidden_dropout_prob', 'attention_probs_dropout_prob', 'max_position_embeddings',
                 'type_vocab_size', 'initializer_range', 'layer_norm_eps', 'pad_token_id', 'num_labels'):
        assert getattr(ours, name) == getattr(theirs, name), name


def test_config_json_both_ways(tmp_path):
    ours = BertConfig(vocab_size=321, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
                      id2label={0: 'O', 1: 'B-PER', 2: 'I-PER'})
    ours.save_pretrained(tmp_path / 'ours')
    theirs = transformers.BertConfig.from_pretrained(tmp_path / 'ours')
    assert (theirs.vocab_size, theirs.hidden_size, theirs.num_hidden_layers, theirs.num_labels) == (321, 48, 3, 3)
    assert theirs.id2label == {0: 'O', 1: 'B-PER', 2: 'I-PER'} and theirs.label2id['I-PER'] == 2
    theirs.save_pretrained(tmp_path / 'theirs')
    back = BertConfig.from_pretrained(tmp_path / 'theirs' / 'config.json')
    assert back.id2label == ours.id2label and back.hidden_size == 48
    assert 'transformers_version' in back.extra            # unknown keys are kept ...
    back.save_pretrained(tmp_path / 'again')              # ... and written back
    assert 'transformers_version' in json.loads((tmp_path / 'again' / 'config.json').read_text())


@pytest.mark.parametrize('content, message', [
    ('{"hidden_size": 64,\n "vocab_size": }', 'line 2'),
    ('{"model_type": "gpt2"}', "model_type is 'gpt2'"),
    ('{"hidden_size": 100, "num_attention_heads": 12}', 'not divisible'),
    ('{"num_hidden_layers": "six"}', 'num_hidden_layers must be an int'),
    ('{"id2label": {"0": "O", "1": "B-PER"}, "num_labels": 5}', 'num_labels=5'),
    ('[1, 2]', 'expected a JSON object'),
])
def test_bad_config_files_say_what_and_where(tmp_path, content, message):
    path = tmp_path / 'config.json'
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        BertConfig.from_pretrained(tmp_path)
    assert str(path) in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='no config file'):
        BertConfig.from_pretrained(tmp_path)


def test_check_texts_is_the_one_check_of_a_list_of_texts():
    "One home: the engine, the classifier's logits, the OOD features, the MLM corpus and sentence embeddings use it."
    from bert_book.core import check_texts
    assert check_texts(('a', 'b')) == ['a', 'b'] and check_texts([]) == []
    for bad, error, message in (('Paris', TypeError, 'not one str'), (['ok', 3], TypeError, r'texts\[1\] is int'),
                                ({'t': 1}, TypeError, 'got dict'), (['a', 'b\ud800'], ValueError, 'lone surrogate')):
        with pytest.raises(error, match=message): check_texts(bad)
    import bert_book.classification as c, bert_book.ood as o, bert_book.mlm as m, bert_book.pretrained as p
    import bert_book.compression as k, bert_book.engine as e
    for module in (c, o, m, p, k, e): assert module.check_texts is check_texts, module.__name__
