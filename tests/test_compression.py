"""Compression seen from outside (chapter 12): int8 quantisation, head pruning with its config round trip, magnitude
pruning, distillation, the engine's and the server's `--quantize int8`, and `bert-book compress`."""
import copy, json, shutil

import httpx
import pytest
import torch
import transformers

from bert_book.cli import main, ServeProcess
from bert_book.compression import (quantize_int8, quantize_for_serving, encoder_linears, count_weights, file_size_mb,
                                   head_importance, heads_to_prune, prune_heads, magnitude_prune, sparsity,
                                   shrink_layers, distillation_loss, distill, batch_logits, QUANTIZATIONS)
from bert_book.classification import ClassificationCollator, encode_texts
from bert_book.core import BertConfig, seed_everything
from bert_book.datasets import LabelledText
from bert_book.heads import BertForSequenceClassification, BertForTokenClassification
from bert_book.pretrained import from_pretrained, save_pretrained
from bert_book.engine import Engine
from bert_book.tokenizer import BertTokenizer
from bert_book.training import Trained, TrainingConfig
from tiny import tiny_config

TEXTS = ['A triumph of style.', 'Dull, and far too long.', 'The cast is wonderful and the story moves.',
         'I wanted to like it.', 'Nothing works here', 'One of the best films of the year, funny and warm.'] * 4


def tiny(cls=BertForSequenceClassification, layers=2, heads=4, **kw):
    seed_everything(0)
    cfg = tiny_config(120, num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=512,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3, **kw)
    return cls(cfg).eval()


def batches(n=3, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randint(5, 120, (4, T), generator=g)
        mask = torch.ones_like(x); mask[0, T // 2:] = 0
        out.append((x, mask))
    return out


def test_quantize_int8_layers_and_errors():
    m = tiny()
    names = list(encoder_linears(m))
    assert len(names) == 2 * 6 and names[0] == 'bert.encoder.layer.0.attention.self.query'
    q = quantize_int8(m, keep_float=names[:1])
    kinds = {n: type(mod).__module__ for n, mod in q.named_modules()}
    assert kinds[names[0]].startswith('torch.nn') and all(kinds[n].startswith('torch.ao.nn.quantized') for n in names[1:])
    assert kinds['classifier'].startswith('torch.nn') and kinds['bert.pooler.dense'].startswith('torch.nn')
    assert count_weights(q) == count_weights(m) and file_size_mb(q) < file_size_mb(m)
    assert type(m.bert.encoder.layer[0].output.dense) is torch.nn.Linear        # the original is untouched
    ref, got = batch_logits(m, batches()), batch_logits(q, batches())
    assert max((a - b).abs().max().item() for a, b in zip(ref, got)) < 0.1
    with pytest.raises(ValueError, match='not an encoder Linear'): quantize_int8(m, keep_float=['classifier'])
    with pytest.raises(ValueError, match='float32'): quantize_int8(copy.deepcopy(m).double())
    with pytest.raises(ValueError, match='int4'): quantize_for_serving(m, 'int4')
    assert 'int8' in QUANTIZATIONS


def test_pruned_heads_equal_gated_heads_and_round_trip(tmp_path):
    m = tiny()
    heads = {0: [1, 3], 1: [0]}
    pruned = prune_heads(copy.deepcopy(m), heads)
    assert [l.attention.self.num_heads for l in pruned.bert.encoder.layer] == [2, 3]
    assert pruned.bert.encoder.layer[0].attention.self.query.weight.shape == (16, 32)
    assert pruned.bert.encoder.layer[0].attention.output.dense.weight.shape == (32, 16)

    def gated(batch):
        hooks = []
        for i, layer in enumerate(m.bert.encoder.layer):
            g = torch.ones(4); g[heads.get(i, [])] = 0
            hooks.append(layer.attention.output.dense.register_forward_pre_hook(lambda mod, a, g=g: (a[0] * g.repeat_interleave(8),)))
        try: return batch_logits(m, batch)
        finally:
            for h in hooks: h.remove()
    for a, b in zip(gated(batches()), batch_logits(pruned, batches())): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # pruning twice speaks in the unpruned model's head ids
    twice = prune_heads(copy.deepcopy(pruned), {0: [2]})
    assert twice.config.pruned_heads == {0: [1, 2, 3], 1: [0]}
    for a, b in zip(batch_logits(twice, batches()), batch_logits(prune_heads(copy.deepcopy(m), {0: [1, 2, 3], 1: [0]}), batches())):
        torch.testing.assert_close(a, b)
    # a folder: config.json has pruned_heads with string keys, and loads into the same shapes and logits
    from bert_book.tokenizer import train_wordpiece
    from bert_book.data import load_corpus
    tok = train_wordpiece(load_corpus()[:300], vocab_size=120)
    save_pretrained(twice, tok, tmp_path / 'p')
    assert json.loads((tmp_path / 'p' / 'config.json').read_text())['pruned_heads'] == {'0': [1, 2, 3], '1': [0]}
    back = from_pretrained(tmp_path / 'p', 'sequence-classification', device='cpu')
    for a, b in zip(batch_logits(back, batches()), batch_logits(twice, batches())): torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match='all of its 4 heads'): prune_heads(copy.deepcopy(m), {0: [0, 1, 2, 3]})
    with pytest.raises(ValueError, match='layer 5 does not exist'): prune_heads(copy.deepcopy(m), {5: [0]})
    with pytest.raises(ValueError, match='head 4 does not exist'): prune_heads(copy.deepcopy(m), {0: [4]})
    with pytest.raises(ValueError, match='removes all 4 heads'): BertConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, pruned_heads={'1': [0, 1, 2, 3]})


def test_head_importance_and_choice():
    m = tiny()
    data = [{'input_ids': x, 'attention_mask': mask, 'labels': torch.tensor([0, 1, 2, 1])} for x, mask in batches()]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    imp = head_importance(m, data)
    assert imp.shape == (2, 4) and torch.allclose(imp.norm(dim=1), torch.ones(2))
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items()) and all(p.requires_grad for p in m.parameters())
    chosen = heads_to_prune(imp, 0.5)
    assert sum(map(len, chosen.values())) == 4
    assert all(int(imp[i].argmax()) not in hs for i, hs in chosen.items())        # each layer keeps its best head
    most = heads_to_prune(imp, 0.99)
    assert all(len(hs) == 3 for hs in most.values())                              # never a layer's last head
    again = head_importance(prune_heads(copy.deepcopy(m), chosen), data)
    assert sum(torch.isnan(again).sum(1).tolist()) == 4
    assert heads_to_prune(again, 0.5) == chosen                                   # removed heads count towards the fraction
    with pytest.raises(ValueError, match='labelled batches'): head_importance(m, [{'input_ids': batches()[0][0]}])


def test_magnitude_pruning():
    m = tiny()
    p = magnitude_prune(m, 0.6)
    assert abs(sparsity(p) - 0.6) < 0.01 and sparsity(m) == 0.0
    masked = magnitude_prune(m, 0.6, remove=False)
    linear_mb = sum(mod.weight.numel() * 4 for n, mod in m.named_modules() if n in encoder_linears(m)) / 1e6
    assert file_size_mb(masked) - file_size_mb(m) > 0.95 * linear_mb       # a float mask beside every pruned weight
    assert abs(file_size_mb(p) - file_size_mb(m)) < 0.01
    for a, b in zip(batch_logits(masked, batches()), batch_logits(p, batches())): torch.testing.assert_close(a, b)
    with pytest.raises(ValueError): magnitude_prune(m, 1.0)


def test_shrink_layers_and_distillation_loss():
    m = tiny(layers=3)
    same = shrink_layers(m, [0, 1, 2])
    for a, b in zip(batch_logits(m, batches()), batch_logits(same, batches())): torch.testing.assert_close(a, b)
    s = shrink_layers(prune_heads(copy.deepcopy(m), {2: [0]}), [0, 2])
    assert s.config.num_hidden_layers == 2 and s.config.pruned_heads == {1: [0]} and s.bert.encoder.layer[1].attention.self.num_heads == 3
    tagger = shrink_layers(tiny(BertForTokenClassification, layers=3), [1])
    assert isinstance(tagger, BertForTokenClassification) and tagger.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match='distinct'): shrink_layers(m, [0, 0])
    with pytest.raises(ValueError): shrink_layers(m, [3])
    g = torch.Generator().manual_seed(0)
    s_, t_, y_ = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, -100, 1])
    torch.testing.assert_close(distillation_loss(s_, t_, y_, alpha=0.0), torch.nn.functional.cross_entropy(s_, y_))
    assert distillation_loss(t_, t_, y_, alpha=1.0).abs() < 1e-6
    assert distillation_loss(s_, t_, y_, alpha=1.0) > 0
    with pytest.raises(ValueError, match='temperature'): distillation_loss(s_, t_, y_, temperature=0)


@pytest.fixture(scope='module')
def classifier_folder(tiny_folders, tmp_path_factory):
    "A copy of the tiny classifier folder, for the tests that serve or compress it."
    folder = tmp_path_factory.mktemp('cls') / 'classifier'
    shutil.copytree(tiny_folders['classifier'], folder)
    return folder


def test_distill_trains_a_student(tiny_folders):
    tok = BertTokenizer.from_pretrained(tiny_folders['classifier'])
    teacher = from_pretrained(tiny_folders['classifier'], 'sequence-classification', device='cpu')
    examples = [LabelledText(t, 'positive' if i % 2 else 'negative') for i, t in enumerate(TEXTS)]
    data = encode_texts(examples, tok, teacher.config.label2id, 32)
    student = shrink_layers(teacher, [0])
    before = {k: v.clone() for k, v in student.state_dict().items()}
    calls = []
    def evaluate(m):
        calls.append(type(m).__name__)
        return {'loss': 0.0, 'accuracy': float(len(calls))}
    cfg = TrainingConfig(num_epochs=1, batch_size=8, lr=1e-3, progress=False, metric_for_best='accuracy', device='cpu')
    with pytest.raises(TypeError, match='positional'):       # training and eval_fn are keywords
        distill(teacher, student, data, ClassificationCollator(tok.pad_token_id), cfg, evaluate)
    result = distill(teacher, student, data, ClassificationCollator(tok.pad_token_id), training=cfg, eval_fn=evaluate)
    assert isinstance(result, Trained) and result.model is student
    trained, history = result
    assert trained is student and calls and set(calls) == {'BertForSequenceClassification'}
    assert any(not torch.equal(v, trained.state_dict()[k]) for k, v in before.items())
    assert history.train and history.eval


def test_engine_and_server_int8(classifier_folder):
    texts = TEXTS[:6] * 3
    fp32 = Engine.from_folder(classifier_folder, device='cpu')
    int8 = Engine.from_folder(classifier_folder, device='cpu', quantize='int8')
    assert 'quantize' in repr(int8) and int8.quantize == 'int8' and fp32.quantize is None
    a, b = fp32.classify(texts), int8.classify(texts)
    assert max(abs(x['scores'][k] - y['scores'][k]) for x, y in zip(a, b) for k in x['scores']) < 0.05
    with pytest.raises(ValueError, match='runs on the CPU'): Engine.from_folder(classifier_folder, device='cuda', quantize='int8')
    with pytest.raises(ValueError, match="quantize='int4'"): Engine.from_folder(classifier_folder, device='cpu', quantize='int4')
    with ServeProcess(classifier_folder, '--quantize', 'int8', threads=1) as server:
        info = httpx.get(f'{server.url}/v1/model', timeout=60).json()
        served = httpx.post(f'{server.url}/v1/classify', json={'texts': texts}, timeout=60).json()['results']
    assert info['quantize'] == 'int8' and info['parameters'] == count_weights(int8.model)
    assert max(abs(x['scores'][k] - y['scores'][k]) for x, y in zip(b, served) for k in x['scores']) < 1e-5


def test_compress_command(classifier_folder, tmp_path, capsys):
    dev = tmp_path / 'dev.jsonl'
    dev.write_text(''.join(json.dumps({'text': t, 'label': 'positive' if i % 2 else 'negative'}) + '\n' for i, t in enumerate(TEXTS)), encoding='utf-8')
    out = tmp_path / 'pruned'
    assert main(['compress', str(classifier_folder), str(out), '--prune-heads', '0.5', '--dev', str(dev)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report['heads_removed'] == 1 and report['weights_after'] < report['weights_before']
    back = from_pretrained(out, 'sequence-classification', device='cpu')
    assert back.config.pruned_heads and sum(l.attention.self.num_heads for l in back.bert.encoder.layer) == 1
    assert Engine.from_folder(out, device='cpu').classify(['Fine.'])[0]['label'] in ('negative', 'positive')
    assert main(['compress', str(classifier_folder), str(out), '--prune-heads', '0.5', '--dev', str(dev)]) != 0   # never overwrites
    assert 'exists' in capsys.readouterr().err


def test_distilled_student_loads_in_transformers(tmp_path, tiny_folders):
    "A student is an ordinary BERT with fewer layers: transformers loads its folder and gives the same logits."
    teacher = from_pretrained(tiny_folders['classifier'], 'sequence-classification', device='cpu')
    student = shrink_layers(prune_heads(copy.deepcopy(teacher), {}), [0])
    tok = BertTokenizer.from_pretrained(tiny_folders['classifier'])
    save_pretrained(student, tok, tmp_path / 's')
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / 's').eval()
    enc = tok(TEXTS[:4], padding=True, return_tensors='pt')
    with torch.no_grad():
        torch.testing.assert_close(hf(**enc).logits, student(enc['input_ids'], attention_mask=enc['attention_mask']).logits, rtol=1e-4, atol=1e-5)
