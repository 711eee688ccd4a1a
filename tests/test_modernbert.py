"""ModernBERT from outside: transformers-made ModernBertModel, ForMaskedLM, ForTokenClassification and
ForSequenceClassification folders (odd shapes, global and local layers, every kind of padding) load with the same
outputs and gradients, the book's models save folders transformers loads back, config.json round-trips, and bad input
is refused with a clear message."""
import importlib
import json, warnings

import pytest
import torch

from bert_book.core import BertConfig
from bert_book.encoder import computed_positions
from bert_book.pretrained import ARCHITECTURES, FAMILIES, load_model, save_pretrained
from bert_book.modernbert import (ModernBertForMaskedLM, ModernBertForSequenceClassification,
                                  ModernBertForTokenClassification, ModernBertModel, layer_masks, layer_types,
                                  modernbert_config)

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    transformers = importlib.import_module('transformers')
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

TOL = 1e-5
V, T = 99, 14
SHAPE = dict(vocab_size=V, hidden_size=36, intermediate_size=40, num_hidden_layers=4, num_attention_heads=3,
             global_attn_every_n_layers=2, local_attention=6, max_position_embeddings=32, pad_token_id=0,
             bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, global_rope_theta=1000.0,
             local_rope_theta=50.0, num_labels=5, attention_dropout=0.0, mlp_dropout=0.0, embedding_dropout=0.0,
             classifier_dropout=0.0)
CASES = {   # name: (transformers class, what differs from SHAPE)
    'model': ('ModernBertModel', {}),
    'mlm': ('ModernBertForMaskedLM', dict(global_attn_every_n_layers=3)),
    'tagger': ('ModernBertForTokenClassification', dict(norm_bias=True, attention_bias=True, mlp_bias=True,
                                                         local_attention=4)),
    'cls': ('ModernBertForSequenceClassification', dict(classifier_pooling='cls')),
    'mean': ('ModernBertForSequenceClassification', dict(classifier_pooling='mean', classifier_bias=True,
                                                          classifier_activation='silu', local_attention=8,
                                                          global_attn_every_n_layers=3)),
}
OURS = {'ModernBertModel': ModernBertModel, 'ModernBertForMaskedLM': ModernBertForMaskedLM,
        'ModernBertForTokenClassification': ModernBertForTokenClassification,
        'ModernBertForSequenceClassification': ModernBertForSequenceClassification}


def peer(case: str):
    "transformers' model of a case, with weights shaken away from their small initial values (so positions matter)."
    name, kw = CASES[case]
    torch.manual_seed(0)
    model = getattr(transformers, name)(transformers.ModernBertConfig(**{**SHAPE, **kw}, attn_implementation='sdpa'))
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def batch(left: int = 2, seed: int = 0):
    "A full row, right padding, left padding (`left` tokens) and a hole."
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(4, T, dtype=torch.long)
    mask[1, 9:], mask[2, :left], mask[3, 6:8] = 0, 0, 0
    return torch.randint(3, V, (4, T), generator=g).masked_fill(mask == 0, 0), mask


def output(model, ids, mask):
    "The logits (or hidden states) at the real tokens, or per sequence."
    y = model(input_ids=ids, attention_mask=mask)
    y = y.logits if getattr(y, 'logits', None) is not None else y.last_hidden_state
    return y[mask.bool()] if y.dim() == 3 else y


def loss_on_real_tokens(y: torch.Tensor) -> torch.Tensor:
    "A loss that reads every real-token output with its own weight."
    w = torch.linspace(-1, 1, y.numel()).view_as(y)
    return (y * w).sum()


def grads(model, ids, mask, names=lambda n: n):
    "d loss / d parameter by (transformers') name."
    model.zero_grad()
    loss_on_real_tokens(output(model, ids, mask)).backward()
    return {names(n): p.grad.clone() for n, p in model.named_parameters()}


def their_name(name: str) -> str:
    "One of the book's parameter names as transformers'."
    return next(iter(FAMILIES['modernbert'].write_keys({name: None}, None)))


def compare(a, b, ids, mask):
    "Max |difference| of the outputs and of every parameter's gradient (a: transformers', b: the book's)."
    out = (output(a, ids, mask) - output(b, ids, mask)).abs().max().item()
    ga, gb = grads(a, ids, mask), grads(b, ids, mask, their_name)
    assert set(gb) <= set(ga), sorted(set(gb) - set(ga))
    return out, max((ga[n] - gb[n]).abs().max().item() for n in gb)


@pytest.mark.parametrize('case', list(CASES))
def test_theirs_to_ours(case, tmp_path):
    theirs = peer(case)
    theirs.save_pretrained(tmp_path / case)
    ours = load_model(tmp_path / case, device='cpu')
    assert type(ours) is OURS[CASES[case][0]]
    ids, mask = batch()
    out, grad = compare(theirs, ours, ids, mask)
    assert out < TOL and grad < TOL, (out, grad)


@pytest.mark.parametrize('case', list(CASES))
def test_ours_to_theirs(case, tmp_path):
    name, kw = CASES[case]
    torch.manual_seed(1)
    ours = OURS[name](modernbert_config(**{**SHAPE, **kw})).eval()
    with torch.no_grad():
        for p in ours.parameters(): p.add_(torch.randn_like(p) * 0.3)
    save_pretrained(ours, None, tmp_path / case)
    auto = {'model': 'AutoModel', 'mlm': 'AutoModelForMaskedLM', 'tagger': 'AutoModelForTokenClassification'}
    back = getattr(transformers, auto.get(case, 'AutoModelForSequenceClassification')).from_pretrained(
        tmp_path / case, attn_implementation='sdpa').eval()
    assert type(back).__name__ == name
    ids, mask = batch(seed=1)
    out, grad = compare(back, ours, ids, mask)
    assert out < TOL and grad < TOL, (out, grad)
    config = transformers.AutoConfig.from_pretrained(tmp_path / case)
    for field in ('local_attention', 'layer_types', 'classifier_pooling', 'norm_bias', 'hidden_size'):
        assert getattr(config, field) == ours.config.extra.get(field, getattr(ours.config, field, None)) or \
               getattr(config, field) == layer_types(ours.config), field
    assert config.rope_parameters['full_attention']['rope_theta'] == SHAPE['global_rope_theta']
    assert config.rope_parameters['sliding_attention']['rope_theta'] == SHAPE['local_rope_theta']


def test_the_check_has_teeth(tmp_path):
    "A model with the wrong window, or with every layer global, is caught at the tolerance above."
    theirs = peer('model')
    theirs.save_pretrained(tmp_path / 'm')
    ids, mask = batch()
    for change in ({'local_attention': 8}, {'layer_types': ['full_attention'] * 4}, {'global_rope_theta': 999.0}):
        ours = load_model(tmp_path / 'm', device='cpu')
        wrong = ModernBertModel(BertConfig(**{**vars(ours.config), 'extra': {**ours.config.extra, **change}})).eval()
        wrong.load_state_dict(ours.state_dict())
        assert (output(theirs, ids, mask) - output(wrong, ids, mask)).abs().max() > 1e-3, change


def test_cls_of_a_long_left_padding_is_a_padding_state(tmp_path):
    """With more left padding than half the window, position 0 (padding) sees no real key in a local layer: the
    book lets it see itself, transformers' two kernels disagree with each other; real tokens are not touched."""
    theirs = peer('cls')
    theirs.save_pretrained(tmp_path / 'c')
    ours = load_model(tmp_path / 'c', device='cpu')
    ids, mask = batch(left=5)
    diff = (output(theirs, ids, mask) - output(ours, ids, mask)).abs().amax(-1)
    assert diff[[0, 1, 3]].max() < TOL and diff[2] > 1e-3
    eager = peer('cls'); eager.set_attn_implementation('eager')
    assert (output(theirs, ids, mask) - output(eager, ids, mask)).abs().amax(-1)[2] > 1e-3
    theirs_tokens = transformers.ModernBertModel.from_pretrained(tmp_path / 'c').eval()
    out = (output(theirs_tokens, ids, mask) - output(ours.bert, ids, mask)).abs().max()
    assert out < TOL


def test_eager_path_agrees_and_its_maps_follow_the_window(tmp_path):
    theirs = peer('mlm'); theirs.save_pretrained(tmp_path / 'm')
    theirs.set_attn_implementation('eager')
    ours = load_model(tmp_path / 'm', device='cpu', attn_implementation='eager')
    ids, mask = batch()
    out = ours(ids, mask, output_attentions=True)   # the written-out softmax rounds differently: logits of size ~5
    assert torch.allclose(out.logits[mask.bool()], output(theirs, ids, mask), rtol=1e-5, atol=5e-5)
    sdpa = load_model(tmp_path / 'm', device='cpu')
    assert torch.allclose(output(sdpa, ids, mask), out.logits[mask.bool()], rtol=1e-5, atol=1e-4)
    local = out.attentions[1][2, 0]                     # layer 1 is local; row 2 has 2 padding tokens on the left
    assert local[5, :2].sum() == 0 and local[5, 9:].sum() == 0 and abs(local[5].sum().item() - 1) < 1e-5


def test_masks_never_leave_a_row_empty():
    mask = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1], [0] * 8])
    masks = layer_masks(mask, 8, 4, None)
    for m in masks.values(): assert m.any(-1).all()
    local = masks['sliding_attention']
    assert local[1, 0, 4].tolist() == [False, False, True, True, True, True, True, False]
    assert local[0, 0, 7, :6].sum() == 0 and local[0, 0, 0].tolist() == [True] + [False] * 7


def test_config_json_round_trips_and_reads_both_formats(tmp_path):
    old = {'model_type': 'modernbert', 'hidden_size': 36, 'num_attention_heads': 3, 'num_hidden_layers': 5,
           'global_attn_every_n_layers': 2, 'global_rope_theta': 1234.0, 'local_rope_theta': 77.0, 'vocab_size': 99,
           'pad_token_id': 0, 'hidden_activation': 'gelu_pytorch_tanh', 'norm_eps': 1e-6}
    (tmp_path / 'config.json').write_text(json.dumps(old))
    config = BertConfig.from_pretrained(tmp_path)
    assert layer_types(config) == ['full_attention', 'sliding_attention'] * 2 + ['full_attention']
    assert (config.extra['global_rope_theta'], config.extra['local_rope_theta']) == (1234.0, 77.0)
    assert (config.hidden_act, config.layer_norm_eps, config.type_vocab_size) == ('gelu_pytorch_tanh', 1e-6, 0)
    assert config.max_position_embeddings == 8192 and config.intermediate_size == 1152   # transformers' defaults
    assert config.hidden_dropout_prob == 0.0 and config.extra['local_attention'] == 128
    config.save_pretrained(tmp_path / 'out')
    written = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert 'hidden_act' not in written and written['hidden_activation'] == 'gelu_pytorch_tanh'
    assert 'type_vocab_size' not in written and written['norm_eps'] == 1e-6
    again = BertConfig.from_pretrained(tmp_path / 'out')
    assert again.to_dict() == config.to_dict()
    theirs = transformers.AutoConfig.from_pretrained(tmp_path / 'out')
    assert theirs.layer_types == layer_types(config) and theirs.hidden_activation == 'gelu_pytorch_tanh'
    assert theirs.rope_parameters['sliding_attention']['rope_theta'] == 77.0


@pytest.mark.parametrize('change, message', [
    ({'classifier_pooling': 'max'}, "classifier_pooling must be one of ('cls', 'mean'), got 'max'"),
    ({'layer_types': ['full_attention']}, 'layer_types must name one of'),
    ({'local_attention': 0}, 'local_attention (the window, in tokens) must be'),
    ({'rope_parameters': {'full_attention': {'rope_type': 'yarn', 'rope_theta': 10.0}}}, "rope_type 'yarn'"),
    ({'classifier_activation': 'mish'}, "classifier_activation='mish' is not supported"),
])
def test_bad_config_json_is_refused(tmp_path, change, message):
    d = {'model_type': 'modernbert', 'hidden_size': 36, 'num_attention_heads': 3, 'num_hidden_layers': 2,
         'vocab_size': 99, 'pad_token_id': 0, **change}
    (tmp_path / 'config.json').write_text(json.dumps(d))
    with pytest.raises(ValueError, match=None) as e: BertConfig.from_pretrained(tmp_path)
    assert message in str(e.value)


def test_bad_input_is_refused():
    model = ModernBertModel(modernbert_config(**SHAPE)).eval()
    with pytest.raises(ValueError, match='sequence length 33 is longer than max_position_embeddings=32'):
        model(torch.ones(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match=r'input_ids must be a 2-D integer tensor .* got shape \(5,\)'):
        model(torch.ones(5, dtype=torch.long))
    with pytest.raises(ValueError, match='attention_mask has shape'):
        model(torch.ones(2, 5, dtype=torch.long), torch.ones(2, 4))
    with pytest.raises(ValueError, match='token_type_ids must lie in'):
        model(torch.ones(1, 5, dtype=torch.long), token_type_ids=torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="model_type 'modernbert'"):
        ModernBertModel(BertConfig(hidden_size=36, num_attention_heads=3))
    with pytest.raises(ValueError, match='must be even'):
        ModernBertModel(modernbert_config(**{**SHAPE, 'hidden_size': 45, 'num_attention_heads': 5}))


def test_registered_for_load_model_and_front_door_names():
    for name in OURS: assert ARCHITECTURES[name] is OURS[name]
    assert 'modernbert' in FAMILIES
    model = ModernBertForMaskedLM(modernbert_config(**SHAPE))
    assert model.decoder.weight is model.bert.embeddings.tok_embeddings.weight
    assert model.get_input_embeddings() is model.bert.embeddings.tok_embeddings


@pytest.mark.parametrize('case', ['tagger', 'mean', 'cls'])
def test_unpadded_blocks_compute_the_real_tokens_only_and_agree(case):
    "Chapter 4's unpadding in ModernBERT's block: the Linear layers see N real rows, outputs and gradients agree."
    name, kw = CASES[case]
    torch.manual_seed(2)
    model = OURS[name](modernbert_config(**{**SHAPE, **kw})).eval()
    ids, mask = batch()
    rows = []
    hook = model.bert.encoder.layers[1].attn.Wqkv.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape))
    fast, g_fast = output(model, ids, mask), grads(model, ids, mask)
    model.set_unpad(False)
    slow, g_slow = output(model, ids, mask), grads(model, ids, mask)
    hook.remove()
    real = int(mask.sum()) + int((mask[:, 0] == 0).sum())   # position 0 of a left-padded row is computed too
    assert rows[0] == (real, SHAPE['hidden_size']) and rows[-1] == (4, T, SHAPE['hidden_size'])
    assert (fast - slow).abs().max() < 1e-5
    assert max((g_fast[n] - g_slow[n]).abs().max().item() for n in g_fast) < 1e-5
    model.set_unpad(True)
    states = model.bert(ids, mask).last_hidden_state
    assert states[~computed_positions(mask)].abs().max() == 0   # zeros at the padding it skipped


def test_unpadded_rows_round_up_under_bf16_on_the_cpu():
    torch.manual_seed(3)
    model = ModernBertModel(modernbert_config(**SHAPE)).eval()
    lengths = torch.tensor([32, 20, 10, 5, 32, 16, 8, 3])           # 126 real tokens of 256
    mask = (torch.arange(32)[None] < lengths[:, None]).long()
    ids = torch.randint(3, V, (8, 32)).masked_fill(mask == 0, 0)
    rows = []
    model.encoder.layers[0].mlp.Wi.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    with torch.autocast('cpu', dtype=torch.bfloat16): model(ids, mask)
    model(ids, mask)
    assert rows == [128, 126]   # bf16: rounded up to a multiple of 64 (chapter 4: a kernel per shape); fp32: as many
