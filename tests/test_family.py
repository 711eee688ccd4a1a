"""BERT's descendants from outside: transformers-made RoBERTa, XLM-R, DistilBERT and ELECTRA folders load with the same
outputs and gradients, the book's models save folders transformers loads back, config.json keeps its family's names,
and what a family cannot hold is refused with the file named."""
import importlib
import json, warnings

import pytest
import torch

import bert_book as bb
from bert_book.core import BertConfig
from bert_book.pretrained import FAMILIES, load_model, save_pretrained, from_pretrained

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    transformers = importlib.import_module('transformers')
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

TOL = 1e-5
V, H = 89, 30   # hidden size not a power of two, three heads of 10


def peer_config(family: str, **kw):
    "transformers' config of a small `family` model with awkward shapes and no dropout."
    shape = dict(vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=3, intermediate_size=44,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=4)
    if family == 'roberta': return transformers.RobertaConfig(**shape, max_position_embeddings=34, pad_token_id=1, **kw)
    if family == 'xlm-roberta':
        return transformers.XLMRobertaConfig(**shape, max_position_embeddings=34, pad_token_id=1, **kw)
    if family == 'electra': return transformers.ElectraConfig(**shape, embedding_size=14, **kw)
    return transformers.DistilBertConfig(vocab_size=V, dim=H, n_layers=2, n_heads=3, hidden_dim=44, dropout=0.0,
                                         attention_dropout=0.0, num_labels=4, **kw)


def batch(pad: int, seed: int = 0):
    "Right padding, left padding, a hole, and a full row."
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[0, 7:], mask[1, :3], mask[2, 4:6] = 0, 0, 0
    return torch.randint(3, V, (4, 10), generator=g).masked_fill(mask == 0, pad), mask


def out(model, ids, mask):
    y = model(input_ids=ids, attention_mask=mask)
    y = y.logits if getattr(y, 'logits', None) is not None else y.last_hidden_state
    return y[mask.bool()] if y.dim() == 3 else y


HEADS = ['Model', 'ForMaskedLM', 'ForTokenClassification', 'ForSequenceClassification']
CASES = [(f, h) for f in ('roberta', 'xlm-roberta', 'distilbert', 'electra') for h in HEADS]


@pytest.mark.parametrize('family,head', CASES)
def test_theirs_to_ours_and_back(family, head, tmp_path):
    name = FAMILIES[family].prefix + head
    torch.manual_seed(0)
    theirs = getattr(transformers, name)(peer_config(family)).eval()
    theirs.save_pretrained(tmp_path / 'theirs')
    ours = load_model(tmp_path / 'theirs', device='cpu')
    assert ours.config.model_type == family
    ids, mask = batch(ours.config.pad_token_id)
    assert (out(theirs, ids, mask) - out(ours, ids, mask)).abs().max() <= TOL
    for m in (theirs, ours):   # gradients too, at the word embeddings
        m.zero_grad(); out(m, ids, mask).pow(2).sum().backward()
    assert (theirs.get_input_embeddings().weight.grad - ours.get_input_embeddings().weight.grad).abs().max() <= TOL
    save_pretrained(ours, None, tmp_path / 'ours')
    written = json.loads((tmp_path / 'ours' / 'config.json').read_text())
    assert written['architectures'] == [name] and written['model_type'] == family
    assert not {'positions_skip_padding', 'pooler_act'} & set(written)
    back = getattr(transformers, name).from_pretrained(tmp_path / 'ours').eval()
    assert (out(back, ids, mask) - out(ours, ids, mask)).abs().max() <= TOL


def test_roberta_positions_follow_the_ids_not_the_mask(tmp_path):
    "A left-padded sentence gives the outputs it gives alone (RoBERTa's positions restart after padding)."
    theirs = transformers.RobertaModel(peer_config('roberta')).eval()
    theirs.save_pretrained(tmp_path)
    ours = load_model(tmp_path, device='cpu')
    alone = torch.tensor([[0, 5, 6, 7, 2]])
    padded = torch.tensor([[1, 1, 0, 5, 6, 7, 2]])
    a = ours(alone).last_hidden_state[0]
    b = ours(padded, (padded != 1).long()).last_hidden_state[0, 2:]
    assert (a - b).abs().max() <= TOL


def test_roberta_length_limit_counts_the_offset(tmp_path):
    transformers.RobertaModel(peer_config('roberta')).save_pretrained(tmp_path)
    ours = load_model(tmp_path, device='cpu')
    assert ours.config.max_sequence_length == 34 - 2
    ours(torch.full((1, 32), 5))
    with pytest.raises(ValueError, match="longer than max_position_embeddings=34 less RoBERTa's offset of 2"):
        ours(torch.full((1, 33), 5))


def test_distilbert_has_no_token_types():
    config = BertConfig.from_dict(peer_config('distilbert').to_dict())
    assert config.type_vocab_size == 0 and config.pooler_act == 'relu'
    model = bb.BertForTokenClassification(config).eval()
    ids = torch.tensor([[2, 5, 3]])
    assert torch.equal(model(ids).logits, model(ids, token_type_ids=torch.zeros_like(ids)).logits)
    with pytest.raises(ValueError, match=r'token_type_ids must lie in \[0, 1\)'):
        model(ids, token_type_ids=torch.ones_like(ids))


def test_distilbert_cannot_hold_token_types(tmp_path):
    config = BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=1, num_attention_heads=3,
                        intermediate_size=44, model_type='distilbert')   # BERT's two token types, DistilBERT's name
    with pytest.raises(ValueError, match='DistilBERT config.json has no token types'):
        save_pretrained(bb.BertForMaskedLM(config), None, tmp_path)


def test_unknown_model_type_is_named(tmp_path):
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'deberta-v2', 'hidden_size': 32}))
    with pytest.raises(ValueError, match=r"model_type is 'deberta-v2'; this book reads \['bert', 'roberta'"):
        BertConfig.from_pretrained(tmp_path)


def test_electra_discriminator_encoder_loads(tmp_path):
    "from_pretrained(folder) of a discriminator is its encoder, the head reported as ignored (tests/test_electra.py: whole)."
    theirs = transformers.ElectraForPreTraining(peer_config('electra')).eval()
    theirs.save_pretrained(tmp_path)
    encoder = from_pretrained(tmp_path, device='cpu')
    assert all(k.startswith('discriminator_predictions.') for k in encoder.loading_info.unexpected_keys)
    ids, mask = batch(0)
    want = theirs.electra(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
    assert (encoder(ids, mask).last_hidden_state[mask.bool()] - want).abs().max() <= TOL

