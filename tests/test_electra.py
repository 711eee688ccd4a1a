"""Replaced-token detection from outside: transformers' ElectraForPreTraining folders load into the book's
discriminator with the same logits and gradients and are written back for transformers; the generator-discriminator
pair shares its embeddings and labels only what it replaced; pre-training runs, saves a discriminator folder that
loads whole, and an encoder that fine-tunes; bad input is refused with what is wrong."""
import importlib, warnings

import pytest
import torch

import bert_book as bb
from bert_book.electra import ElectraForPreTraining, ElectraPretraining, evaluate_electra, generator_config
from bert_book.masking import IGNORE_INDEX
from bert_book.mlm import compact_config, pretraining_data
from bert_book.pretrained import from_pretrained, load_model, save_pretrained

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    transformers = importlib.import_module('transformers')
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

V = 89


def peer():
    "A transformers discriminator with awkward shapes: hidden 30 (three heads of 10), embeddings of 14."
    torch.manual_seed(0)
    config = transformers.ElectraConfig(vocab_size=V, embedding_size=14, hidden_size=30, num_hidden_layers=2,
                                        num_attention_heads=3, intermediate_size=44, max_position_embeddings=24,
                                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.ElectraForPreTraining(config).eval()


def padded():
    "Right padding, left padding, a hole and a full row; labels 0/1 on the real tokens."
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[0, 7:], mask[1, :3], mask[2, 4:6] = 0, 0, 0
    ids = torch.randint(3, V, (4, 10), generator=g).masked_fill(mask == 0, 0)
    labels = torch.randint(0, 2, ids.shape, generator=g)
    return ids, mask, labels


def test_theirs_to_ours_and_back_with_gradients(tmp_path):
    theirs = peer()
    theirs.save_pretrained(tmp_path / 'theirs')
    ours = load_model(tmp_path / 'theirs', device='cpu')
    assert type(ours) is ElectraForPreTraining and bb.ElectraForPreTraining is ElectraForPreTraining
    ids, mask, labels = padded()
    real = mask.bool()
    a = theirs(ids, attention_mask=mask, labels=labels)
    b = ours(ids, mask, labels=labels.masked_fill(~real, IGNORE_INDEX))
    assert (a.logits[real] - b.logits[real]).abs().max() <= 1e-5
    assert abs(a.loss.item() - b.loss.item()) <= 1e-6
    a.loss.backward(); b.loss.backward()
    ours_grads = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        mine = ours_grads[name.replace('electra.', 'bert.', 1)]
        assert (p.grad - mine.grad).abs().max() <= 1e-6, name
    save_pretrained(ours, None, tmp_path / 'ours')
    back = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / 'ours').eval()
    assert type(back).__name__ == 'ElectraForPreTraining'
    with torch.no_grad():
        assert (back(ids, attention_mask=mask).logits[real] - ours(ids, mask).logits[real]).abs().max() <= 1e-5


def test_the_task_name_loads_a_new_head_on_an_encoder(tmp_path):
    peer().electra.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path, 'replaced-token-detection', device='cpu')
    assert isinstance(model, ElectraForPreTraining)
    assert any(k.startswith('discriminator_predictions.') for k in model.loading_info.missing_keys)


def tiny():
    return compact_config(60, hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2,
                          max_position_embeddings=24)


def test_generator_is_a_fraction_of_the_width_on_the_shared_tables():
    config = tiny()
    g = generator_config(config, 0.25)
    assert (g.hidden_size, g.num_attention_heads, g.intermediate_size, g.embedding_dim) == (8, 1, 16, 32)
    torch.manual_seed(0)
    pair = ElectraPretraining(config)
    shared = pair.discriminator.bert.embeddings.word_embeddings.weight
    assert pair.generator.bert.embeddings.word_embeddings.weight is shared
    assert pair.generator.cls.predictions.decoder.weight is shared
    names = [n for n, _ in pair.named_parameters()]
    assert len(names) == len(set(names)) and sum(p is shared for p in pair.parameters()) == 1


def test_only_masked_positions_are_replaced_and_padding_is_not_scored():
    torch.manual_seed(0)
    pair = ElectraPretraining(tiny())
    ids = torch.randint(5, 60, (3, 12)); mask = torch.ones_like(ids); mask[2, 8:] = 0
    labels = torch.full_like(ids, IGNORE_INDEX); labels[:, 1:5] = ids[:, 1:5]
    out = pair(ids.masked_fill(labels != IGNORE_INDEX, 4), mask, labels, generator=torch.Generator().manual_seed(0))
    assert not ((out.replaced == 1) & (labels == IGNORE_INDEX)).any()
    assert (out.replaced[mask == 0] == IGNORE_INDEX).all()
    unmasked = labels == IGNORE_INDEX
    assert torch.equal(out.input_ids[unmasked], ids[unmasked])                       # the originals, untouched
    assert torch.equal(out.replaced[~unmasked] == 1, out.input_ids[~unmasked] != ids[~unmasked])
    assert abs(out.loss.item() - (out.mlm_loss.item() + 50 * out.rtd_loss.item())) < 1e-3


def test_pretrain_electra_saves_a_discriminator_that_loads_whole(tmp_path):
    texts = [f'the {w} sat on the {v} near the river' for w in ('cat', 'dog', 'bird', 'fox') for v in
             ('mat', 'log', 'hill', 'wall', 'boat')] * 3
    tok = bb.train_wordpiece(texts, vocab_size=60)
    training = bb.TrainingConfig(max_steps=4, batch_size=8, lr=1e-3, eval_every=2, progress=False)
    pair, history = bb.pretrain_electra(texts, tokenizer=tok, config=tiny(), training=training)
    assert history.best_step is not None and history.eval
    for key in ('loss', 'mlm_loss', 'rtd_loss', 'mlm_accuracy', 'rtd_accuracy', 'replaced'):
        assert key in history.eval[-1]
    assert 0 < history.eval[-1]['replaced'] < 1
    save_pretrained(pair.discriminator, tok, tmp_path)
    loaded = load_model(tmp_path, device='cpu')
    assert isinstance(loaded, ElectraForPreTraining) and loaded.config.model_type == 'electra'
    ids = torch.tensor([tok.encode('the cat sat on the mat')])
    pair.discriminator.eval()
    with torch.no_grad(): assert (loaded(ids).logits - pair.discriminator(ids).logits).abs().max() < 1e-6
    with pytest.raises(bb.engine.UnsupportedTask, match='replaced-token-detection'): bb.load(tmp_path)


def test_evaluation_is_the_same_twice():
    texts = ['a b c d e f g', 'g f e d c b a', 'a c e g b d f'] * 6
    tok = bb.train_wordpiece(texts, vocab_size=40)
    config = compact_config(tok.vocab_size, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                            num_hidden_layers=1, max_position_embeddings=16)
    _, _, batches = pretraining_data(texts, None, tok, 16, eval_fraction=0.3)
    torch.manual_seed(0)
    pair = ElectraPretraining(config)
    assert evaluate_electra(pair, batches) == evaluate_electra(pair, batches)


def test_bad_input_is_refused_with_what_is_wrong():
    torch.manual_seed(0)
    disc = ElectraForPreTraining(tiny())
    ids = torch.randint(5, 60, (2, 6))
    with pytest.raises(ValueError, match=r'labels must be in \[0, 2\)'): disc(ids, labels=torch.full_like(ids, 2))
    with pytest.raises(ValueError, match=r'labels have shape \(2, 5\)'): disc(ids, labels=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(TypeError, match='needs tokenizer='): bb.pretrain_electra(['some text'])
    tok = bb.train_wordpiece(['a few words of text'] * 4, vocab_size=40)
    with pytest.raises(ValueError, match='smaller than the tokenizer'):
        bb.pretrain_electra(['a few words'] * 4, tokenizer=tok, config=tiny().__class__(vocab_size=5))
