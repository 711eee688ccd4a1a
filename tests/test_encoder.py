"""bert_book.encoder and bert_book.heads seen from outside: inputs checked with clear errors, BERT's initialisation,
the attention switch, and no dependency on transformers."""
import subprocess, sys

import pytest
import torch

from bert_book.core import BertConfig
from bert_book.encoder import BertModel, encoder_of, key_padding_mask
from bert_book.heads import BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification

CONFIG = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    max_position_embeddings=8, num_labels=3)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return BertModel(CONFIG).eval()


IDS = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])


@pytest.mark.parametrize('call, message', [
    (lambda m: m(IDS.float()), 'input_ids must be a 2-D integer tensor'),
    (lambda m: m(IDS[0]), 'got shape (4,)'),
    (lambda m: m(IDS.bool()), 'dtype torch.bool'),
    (lambda m: m(torch.zeros(1, 9, dtype=torch.long)), 'sequence length 9 is longer than max_position_embeddings=8'),
    (lambda m: m(torch.tensor([[2, 50]])), 'input_ids must lie in [0, 50) (vocab_size=50)'),
    (lambda m: m(torch.tensor([[2, -1]])), 'values range from -1 to 2'),
    (lambda m: m(IDS, torch.ones(2, 3)), 'attention_mask has shape (2, 3) but input_ids has shape (2, 4)'),
    (lambda m: m(IDS, torch.tensor([[0., 0, 0, 0], [0, 0, 0, -1e4]])), 'additive mask'),
    (lambda m: m(IDS, token_type_ids=torch.full((2, 4), 2)), 'token_type_ids must lie in [0, 2) (type_vocab_size=2)'),
    (lambda m: m(IDS, token_type_ids=torch.zeros(2, 5, dtype=torch.long)), 'token_type_ids has shape (2, 5)'),
    (lambda m: m(IDS, position_ids=torch.arange(3)), 'position_ids has shape (3,)'),
    (lambda m: m(torch.zeros(0, 4, dtype=torch.long)), 'input_ids is empty'),
])
def test_bad_inputs_raise_clear_errors(model, call, message):
    with pytest.raises(ValueError) as e: call(model)
    assert message in str(e.value)


def test_bad_labels_raise_clear_errors():
    mlm, tagger, clf = BertForMaskedLM(CONFIG), BertForTokenClassification(CONFIG), BertForSequenceClassification(CONFIG)
    with pytest.raises(ValueError, match=r'BertForMaskedLM: labels must be in \[0, 50\) or -100'): mlm(IDS, labels=torch.full((2, 4), 50))
    with pytest.raises(ValueError, match='needs labels'): mlm(IDS, masked_only=True)
    with pytest.raises(ValueError, match=r'labels have shape \(2, 3\), expected \(2, 4\)'): tagger(IDS, labels=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match='integer tensor'): tagger(IDS, labels=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r'expected \(2,\)'): clf(IDS, labels=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match='BertConfig'): BertModel({'hidden_size': 16})


def test_mask_polarity_and_all_padding_row():
    m = key_padding_mask(torch.tensor([[1, 1, 0], [0, 0, 0]]))
    assert m.shape == (2, 1, 1, 3) and m.dtype == torch.bool
    assert m[0, 0, 0].tolist() == [True, True, False]   # True = attend
    assert m[1].all()                                    # an all-padding row attends everywhere (no NaN)
    assert key_padding_mask(torch.ones(2, 3)) is None and key_padding_mask(None) is None


def test_padding_changes_nothing_and_mask_is_needed(model):
    with torch.no_grad():
        alone = model(IDS[1:, :3]).last_hidden_state
        padded = model(IDS, (IDS != 0).long()).last_hidden_state
        unmasked = model(IDS).last_hidden_state
    assert (padded[1, :3] - alone[0]).abs().max() < 1e-5
    assert (unmasked[1, :3] - alone[0]).abs().max() > 1e-4  # without the mask the padding leaks in


def test_initialisation_is_berts():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=3000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, num_labels=3)
    for m in (BertForMaskedLM(cfg), BertForTokenClassification(cfg), BertForSequenceClassification(cfg)):
        for name, p in m.named_parameters():
            if 'LayerNorm.weight' in name: assert torch.all(p == 1), name
            elif name.endswith('bias'): assert torch.all(p == 0), name
            else: assert abs(p.std().item() - cfg.initializer_range) < 0.004, name
        assert m.bert.embeddings.word_embeddings.weight[cfg.pad_token_id].abs().sum() == 0


def test_attention_switch_and_outputs(model):
    assert model.attn_implementation == 'sdpa'
    out = model(IDS, (IDS != 0).long(), output_attentions=True, output_hidden_states=True)
    assert model.attn_implementation == 'sdpa'  # output_attentions takes the eager path for that call only
    assert len(out.attentions) == 1 and out.attentions[0].shape == (2, 2, 4, 4)
    assert len(out.hidden_states) == 2 and out.pooler_output.shape == (2, 16)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(2, 2, 4))
    assert out.attentions[0][1, :, :, 3].abs().max() == 0
    with pytest.raises(ValueError, match="attn_implementation='flash'"): model.set_attn_implementation('flash')
    assert BertModel(CONFIG).num_parameters() > BertModel(CONFIG, add_pooling_layer=False).num_parameters()


def test_encoder_of_finds_the_bert_model_of_every_head(model):
    assert encoder_of(model) is model
    for head in (BertForMaskedLM, BertForTokenClassification, BertForSequenceClassification):
        m = head(CONFIG)
        assert encoder_of(m) is m.bert
    with pytest.raises(TypeError, match=r'encoder must be a BertModel or a model with a .bert BertModel .*got Linear'):
        encoder_of(torch.nn.Linear(2, 2), 'encoder')
    with pytest.raises(TypeError, match='model must be a BertModel'): encoder_of(torch.nn.Module())


def test_the_package_does_not_import_transformers():
    code = 'import sys, bert_book.encoder, bert_book.heads; print("transformers" in sys.modules)'
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip() == 'False'


@pytest.mark.slow
def test_compiles_without_graph_breaks():
    "torch.compile(fullgraph=True) works (the value-reading checks are skipped while compiling) and agrees with eager."
    torch.manual_seed(0)
    m = BertForMaskedLM(CONFIG).eval()
    mask = (IDS != 0).long()
    compiled = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        assert (compiled(IDS, mask).logits - m(IDS, mask).logits).abs().max() < 1e-5


# ---- unpadding (chapter 4): the blocks skip padded positions ---------------------------------------------------------
def _padded_batch(seed=0, lengths=(8, 5, 2, 7, 1)):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    return torch.randint(4, 50, (len(lengths), T), generator=g) * mask, mask


@pytest.mark.parametrize('head', [BertModel, BertForMaskedLM, BertForTokenClassification, BertForSequenceClassification])
def test_unpadded_blocks_give_the_padded_pass_at_the_real_tokens(head):
    torch.manual_seed(0)
    model = head(CONFIG).eval()
    ids, mask = _padded_batch()
    real = mask.bool()
    def run(unpad):
        model.set_unpad(unpad)
        out = model(ids, mask)
        t = out.logits if hasattr(out, 'logits') else out.last_hidden_state
        return t[real] if t.dim() == 3 else t, out
    (a, out_a), (b, _) = run(True), run(False)
    assert (a - b).abs().max().item() < 1e-5
    if head in (BertModel, BertForTokenClassification):   # per-token outputs: padding is zeros, or the head's bias alone
        t = out_a.last_hidden_state if head is BertModel else out_a.logits - model.classifier.bias
        assert t[~real].abs().max().item() == 0.0



LONG = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=64, num_labels=3)


def test_bf16_on_the_cpu_rounds_the_rows_up_and_still_zeroes_padding(monkeypatch):
    "Under bf16 autocast the unpadded row count is a multiple of ROW_MULTIPLE; the filler rows never reach the output."
    import bert_book.encoder as encoder
    torch.manual_seed(0)
    model = BertForTokenClassification(LONG).eval()
    lengths = (40, 25, 3, 31, 12, 37, 8, 20)
    ids, mask = _padded_batch(3, lengths)
    seen = []
    from_mask = encoder.RealTokens.from_mask.__func__
    monkeypatch.setattr(encoder.RealTokens, 'from_mask',
                        classmethod(lambda cls, m, multiple=1: seen.append(t := from_mask(cls, m, multiple)) or t))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        a = model(ids, mask).logits.float()
    b = model.float()(ids, mask).logits
    rows, fp32_rows = len(seen[0].index), len(seen[1].index)
    assert rows % encoder.ROW_MULTIPLE == 0 and seen[0].filler == rows - sum(lengths) and fp32_rows == sum(lengths)
    real = mask.bool()
    assert (a[real] - b[real]).abs().max() < 0.1                       # bf16's rounding, nothing else
    assert (a[~real] - model.classifier.bias.float()).abs().max() < 1e-2   # padding: zeros into the head


def test_a_batch_with_almost_no_padding_takes_the_padded_pass_with_zeros_there():
    import bert_book.encoder as encoder
    torch.manual_seed(0)
    model = BertModel(LONG).eval()
    ids, mask = _padded_batch(4, (20,) * 7 + (19,))                   # 1 position of 160 is padding
    assert encoder.RealTokens.from_mask(mask) is None
    out, every = model(ids, mask).last_hidden_state, model.set_unpad(False) or model(ids, mask).last_hidden_state
    real = mask.bool()
    assert (out[real] - every[real]).abs().max() < 1e-6
    assert out[~real].abs().max() == 0.0 and every[~real].abs().max() > 0

def test_unpadded_training_gives_the_same_gradients():
    torch.manual_seed(0)
    model = BertForTokenClassification(CONFIG).eval()     # eval: no dropout, so both passes are deterministic
    ids, mask = _padded_batch(1)
    labels = torch.randint(0, CONFIG.num_labels, ids.shape).masked_fill(mask == 0, -100)
    grads = []
    for unpad in (True, False):
        model.set_unpad(unpad); model.zero_grad()
        model(ids, mask, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0]) < 1e-5


def test_unpadding_steps_aside_for_hidden_states_attentions_and_no_padding(model):
    ids, mask = _padded_batch(2, lengths=(4, 2))
    out = model(ids, mask, output_hidden_states=True, output_attentions=True)   # every position, as transformers
    assert out.last_hidden_state[~mask.bool()].abs().sum().item() > 0
    assert len(out.hidden_states) == CONFIG.num_hidden_layers + 1 and out.attentions[0].shape == (2, 2, 4, 4)
    full = model(ids, torch.ones_like(mask))                                    # no padding: nothing to skip
    assert full.last_hidden_state.shape == (2, 4, CONFIG.hidden_size)
    assert BertModel(CONFIG, unpad=False).unpad is False and model.unpad is True
