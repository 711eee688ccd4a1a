"""Parity with transformers' BERT (a test-only dependency): the same weights, loaded with `strict=True` and no key map in
either direction, give the same outputs and losses; padding never leaks; masked-only MLM gives the full loss."""
import importlib
import copy, pickle, warnings

import pytest
import torch

from bert_book.core import BertConfig
from bert_book.encoder import BertModel
from bert_book.heads import BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    transformers = importlib.import_module('transformers')

TOL = 1e-5
CONFIG = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                    max_position_embeddings=24, id2label={0: 'O', 1: 'B-X', 2: 'I-X'})
PAIRS = {  # ours -> transformers' class of the same name
    'BertModel': (BertModel, transformers.BertModel),
    'BertForMaskedLM': (BertForMaskedLM, transformers.BertForMaskedLM),
    'BertForTokenClassification': (BertForTokenClassification, transformers.BertForTokenClassification),
    'BertForSequenceClassification': (BertForSequenceClassification, transformers.BertForSequenceClassification),
}


def hf_config(config=CONFIG, attn='sdpa', **changes):
    "transformers' BertConfig with the same fields."
    d = {k: v for k, v in config.to_dict().items() if k != 'model_type'}
    cfg = transformers.BertConfig(**{**d, **changes})
    cfg._attn_implementation = attn
    return cfg


def batch(seed=0, B=3, T=11):
    "A padded batch with two segments: ids, attention mask, token types; row lengths T, T-3, 4."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, CONFIG.vocab_size, (B, T), generator=g)
    lengths = torch.tensor([T, T - 3, 4][:B])
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    types = ((torch.arange(T)[None] >= lengths[:, None] // 2) & mask.bool()).long()
    ids = ids * mask  # padding id 0
    return ids, mask, types


def labels_for(name, ids, mask, seed=0):
    "Random labels of the right kind for a head (None for BertModel); -100 on padding."
    g = torch.Generator().manual_seed(seed + 1)
    if name == 'BertForMaskedLM':
        y = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, torch.full_like(ids, -100))
        y[0, 1] = ids[0, 1]  # at least one scored position
        return y.masked_fill(mask == 0, -100)
    if name == 'BertForTokenClassification':
        return torch.randint(0, CONFIG.num_labels, ids.shape, generator=g).masked_fill(mask == 0, -100)
    if name == 'BertForSequenceClassification':
        return torch.randint(0, CONFIG.num_labels, (ids.shape[0],), generator=g)
    return None


def outputs(model, ids, mask, types, labels, ours, every_position=False):
    """The tensors to compare: logits and loss for heads, last hidden state and pooled output for BertModel. Per-token
    tensors at the real tokens only, unless `every_position` (our unpadded blocks leave padding at 0, chapter 4)."""
    with torch.no_grad():
        if ours: out = model(ids, mask, types, labels=labels) if labels is not None else model(ids, mask, types)
        else: out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, **({'labels': labels} if labels is not None else {}))
    real = lambda t: t if every_position or t.shape[:2] != ids.shape else t[mask.bool()]
    if hasattr(out, 'logits'): return {'logits': real(out.logits), **({'loss': out.loss} if labels is not None else {})}
    return {'last_hidden_state': real(out.last_hidden_state), 'pooler_output': out.pooler_output}


def max_gap(a, b):
    "Largest absolute difference over the compared tensors (they must have the same keys and shapes)."
    assert a.keys() == b.keys()
    for k in a: assert a[k].shape == b[k].shape, k
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize('name', list(PAIRS))
@pytest.mark.parametrize('hf_attn', ['eager', 'sdpa'])
@pytest.mark.parametrize('our_attn', ['eager', 'sdpa'])
@pytest.mark.parametrize('direction', ['ours->theirs', 'theirs->ours'])
def test_same_outputs_as_transformers(name, hf_attn, our_attn, direction):
    ours_cls, hf_cls = PAIRS[name]
    torch.manual_seed(1)
    ours, theirs = ours_cls(CONFIG).eval(), hf_cls(hf_config(attn=hf_attn)).eval()
    if direction == 'ours->theirs': theirs.load_state_dict(ours.state_dict(), strict=True)
    else: ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.set_attn_implementation(our_attn)
    ids, mask, types = batch()
    y = labels_for(name, ids, mask)
    a, b = outputs(ours, ids, mask, types, y, True), outputs(theirs, ids, mask, types, y, False)
    assert max_gap(a, b) < TOL
    assert max_gap(a, outputs(ours_cls(CONFIG).eval(), ids, mask, types, y, True)) > 1e-3  # the check can fail
    ours.set_unpad(False)   # every position computed: the same numbers as transformers at the padding too
    assert max_gap(outputs(ours, ids, mask, types, y, True, True), outputs(theirs, ids, mask, types, y, False, True)) < TOL


def test_same_state_dict_keys():
    for name, (ours_cls, hf_cls) in PAIRS.items():
        assert sorted(ours_cls(CONFIG).state_dict()) == sorted(hf_cls(hf_config()).state_dict()), name


def test_same_hidden_states_and_attentions():
    torch.manual_seed(2)
    ours = BertModel(CONFIG).eval()
    theirs = transformers.BertModel(hf_config(attn='eager')).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ids, mask, types = batch()
    with torch.no_grad():
        a = ours(ids, mask, types, output_attentions=True, output_hidden_states=True)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, output_attentions=True, output_hidden_states=True)
    assert len(a.hidden_states) == len(b.hidden_states) == CONFIG.num_hidden_layers + 1
    assert len(a.attentions) == len(b.attentions) == CONFIG.num_hidden_layers
    for x, y in zip(a.hidden_states + a.attentions, b.hidden_states + b.attentions):
        assert (x - y).abs().max().item() < TOL


@pytest.mark.parametrize('our_attn', ['eager', 'sdpa'])
def test_same_gradients_as_transformers(our_attn):
    "Training mode without dropout: the MLM loss's gradients agree parameter by parameter (the tied one included)."
    config = BertConfig.from_dict({**CONFIG.to_dict(), 'hidden_dropout_prob': 0.0, 'attention_probs_dropout_prob': 0.0})
    torch.manual_seed(3)
    ours = BertForMaskedLM(config, attn_implementation=our_attn).train()
    theirs = transformers.BertForMaskedLM(hf_config(config)).train()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ids, mask, types = batch()
    y = labels_for('BertForMaskedLM', ids, mask)
    ours(ids, mask, types, labels=y, masked_only=True).loss.backward()
    theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=y).loss.backward()
    theirs_params = dict(theirs.named_parameters())
    for n, p in ours.named_parameters():
        assert (p.grad - theirs_params[n].grad).abs().max().item() < TOL, n


@pytest.mark.parametrize('name', list(PAIRS))
@pytest.mark.parametrize('our_attn', ['eager', 'sdpa'])
def test_padding_invariance(name, our_attn):
    "A sentence gives the same outputs alone and inside a padded batch."
    torch.manual_seed(4)
    model = PAIRS[name][0](CONFIG, attn_implementation=our_attn).eval()
    ids, mask, types = batch()
    n = int(mask[1].sum())
    with torch.no_grad():
        inside = model(ids, mask, types)
        alone = model(ids[1:2, :n], mask[1:2, :n], types[1:2, :n])
    if name == 'BertModel':
        gap = (inside.last_hidden_state[1, :n] - alone.last_hidden_state[0]).abs().max().item()
        gap = max(gap, (inside.pooler_output[1] - alone.pooler_output[0]).abs().max().item())
    elif name == 'BertForSequenceClassification':
        gap = (inside.logits[1] - alone.logits[0]).abs().max().item()
    else:
        gap = (inside.logits[1, :n] - alone.logits[0]).abs().max().item()
    assert gap < TOL


@pytest.mark.parametrize('name', list(PAIRS))
@pytest.mark.parametrize('our_attn', ['eager', 'sdpa'])
def test_all_padding_row_gives_no_nan(name, our_attn):
    "A batch slot that is all padding yields finite outputs, loss and gradients, and does not change the other rows."
    torch.manual_seed(5)
    model = PAIRS[name][0](CONFIG, attn_implementation=our_attn)
    ids, mask, types = batch()
    ids[2], mask[2], types[2] = 0, 0, 0
    y = labels_for(name, ids, mask)
    model.eval()
    with torch.no_grad():
        out = model(ids, mask, types)
        without = model(ids[:2], mask[:2], types[:2])
    main = out.logits if hasattr(out, 'logits') else out.last_hidden_state
    ref = without.logits if hasattr(without, 'logits') else without.last_hidden_state
    assert torch.isfinite(main).all()
    assert (main[:2] - ref).abs().max().item() < TOL
    model.train()
    out = model(ids, mask, types, labels=y) if y is not None else model(ids, mask, types)
    loss = out.loss if y is not None else out.last_hidden_state.sum()
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_masked_only_gives_the_full_loss_and_gradients():
    torch.manual_seed(6)
    config = BertConfig.from_dict({**CONFIG.to_dict(), 'hidden_dropout_prob': 0.0, 'attention_probs_dropout_prob': 0.0})
    model = BertForMaskedLM(config).train()
    ids, mask, types = batch()
    y = labels_for('BertForMaskedLM', ids, mask)
    full = model(ids, mask, types, labels=y)
    full.loss.backward()
    g_full = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fast = model(ids, mask, types, labels=y, masked_only=True)
    fast.loss.backward()
    assert abs(full.loss.item() - fast.loss.item()) < 1e-6
    assert fast.logits.shape == (int((y != -100).sum()), config.vocab_size)
    assert (fast.logits - full.logits[y != -100]).abs().max().item() < TOL
    for n, p in model.named_parameters():
        assert (p.grad - g_full[n]).abs().max().item() < 1e-6, n


def test_tying_survives_loading_moving_and_assign():
    def tied(m):
        p = m.cls.predictions
        return p.decoder.weight is m.bert.embeddings.word_embeddings.weight and p.decoder.bias is p.bias
    src = BertForMaskedLM(CONFIG)
    assert tied(src)
    m = BertForMaskedLM(CONFIG); m.load_state_dict(src.state_dict(), strict=True); assert tied(m)
    m = BertForMaskedLM(CONFIG); m.load_state_dict(src.state_dict(), assign=True); assert tied(m)
    assert tied(BertForMaskedLM(CONFIG).to(torch.float64))
    m.init_weights(); assert tied(m)
    assert tied(copy.deepcopy(m)) and tied(pickle.loads(pickle.dumps(m)))
    assert m.bert.embeddings.word_embeddings.weight[CONFIG.pad_token_id].abs().sum().item() == 0.0


def test_loads_a_transformers_checkpoint_file_without_tied_keys(tmp_path):
    "save_pretrained leaves out the tied decoder keys; they are filled in, so strict loading works."
    from safetensors.torch import load_file
    torch.manual_seed(7)
    theirs = transformers.BertForMaskedLM(hf_config()).eval()
    theirs.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / 'model.safetensors'))
    assert 'cls.predictions.decoder.weight' not in state
    ours = BertForMaskedLM(CONFIG).eval()
    ours.load_state_dict(state, strict=True)
    ids, mask, types = batch()
    assert max_gap(outputs(ours, ids, mask, types, None, True), outputs(theirs, ids, mask, types, None, False)) < TOL


def test_loads_legacy_keys():
    "Old checkpoints: an `embeddings.position_ids` buffer and LayerNorm `gamma`/`beta` names."
    src = BertModel(CONFIG, add_pooling_layer=False)
    state = {}
    for k, v in src.state_dict().items():
        k = k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias', 'LayerNorm.beta')
        state['bert.' + k] = v
    state['bert.embeddings.position_ids'] = torch.arange(CONFIG.max_position_embeddings)[None]
    head = BertForTokenClassification(CONFIG)
    missing = head.load_state_dict(state, strict=False)
    assert sorted(missing.missing_keys) == ['classifier.bias', 'classifier.weight'] and not missing.unexpected_keys
    assert torch.equal(head.bert.encoder.layer[1].output.LayerNorm.weight, src.encoder.layer[1].output.LayerNorm.weight)
