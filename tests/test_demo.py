"""The book's main job from outside: `bert_book.demo.main` with the quick recipe writes loadable folders, figures and
metrics that agree with each other; user errors give a message and exit status 1, without a traceback."""
import importlib
import json, subprocess, sys

import pytest
import torch

from bert_book.demo import main, run_demo
from bert_book.pretrained import from_pretrained
from bert_book.token_classification import NERPipeline
from bert_book.tokenizer import BertTokenizer


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo') / 'run'
    lines = []
    summary = run_demo(out, quick=True, progress=False, log=lines.append)
    return out, summary, lines


def test_writes_what_it_says(demo):
    out, summary, lines = demo
    for name in summary['files']: assert (out / name).exists(), name
    for name in ('config.json', 'model.safetensors', 'tokenizer.json', 'vocab.txt'):
        assert (out / 'ner' / name).is_file() and (out / 'mlm' / name).is_file()
    assert json.loads((out / 'metrics.json').read_text()) == json.loads(json.dumps(summary))
    assert [l[:5] for l in lines if l.startswith('[')] == [f'[{i}/7]' for i in range(1, 8)]
    assert any('micro avg' in l for l in lines)                        # the test-set report was printed


def test_scores_are_consistent(demo):
    _, summary, _ = demo
    s = summary['ner']
    for mode in ('default', 'strict'):
        p, r, f = s[f'precision_{mode}'], s[f'recall_{mode}'], s[f'f1_{mode}']
        assert 0 <= p <= 1 and 0 <= r <= 1 and f == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-9)
    assert 0 < s['token_accuracy'] <= 1 and summary['mlm']['perplexity'] > 1


def test_saved_tagger_reproduces_the_examples(demo):
    out, summary, _ = demo
    model = from_pretrained(out / 'ner', task='token-classification')
    tok = BertTokenizer.from_pretrained(out / 'ner')
    texts = [e['text'] for e in summary['examples']]
    again = NERPipeline(model, tok, device='cpu')(texts)
    for ex, ents in zip(summary['examples'], again):
        assert [(e['label'], e['start'], e['end']) for e in ents] == [(e['label'], e['start'], e['end']) for e in ex['entities']]
        for e in ents: assert ex['text'][e['start']:e['end']] == e['text']


def test_minilm_step_reports_the_same_sentences(demo):
    "Step 6: MiniLM fine-tuned on the same data; its entities point into the same demo texts, its scores are probabilities."
    _, summary, lines = demo
    m = summary['minilm']
    assert m['steps'] >= 1 and m['parameters'] > summary['model']['parameters']
    assert 0 <= m['f1_default'] <= 1 and 0 <= m['f1_strict'] <= 1
    assert [e['text'] for e in m['examples']] == [e['text'] for e in summary['examples']]
    for ex in m['examples']:
        for e in ex['entities']: assert ex['text'][e['start']:e['end']] == e['text'] and 0 <= e['score'] <= 1
    assert sum(l.strip().startswith('from MiniLM:') for l in '\n'.join(lines).splitlines()) == len(m['examples'])


def test_saved_mlm_folder_loads_in_transformers(demo):
    transformers = importlib.import_module('transformers')
    out, _, _ = demo
    ours = from_pretrained(out / 'mlm', task='masked-lm').eval()
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(out / 'mlm').eval()
    ids = BertTokenizer.from_pretrained(out / 'mlm')(['Talks resumed in [MASK] on Monday.'], return_tensors='pt')
    with torch.no_grad():
        gap = (ours(**ids).logits - theirs(**ids).logits).abs().max().item()
    assert gap < 1e-4


def test_user_errors_exit_1_without_traceback(tmp_path):
    afile = tmp_path / 'afile'; afile.write_text('keep me')
    code = 'import sys; from bert_book.demo import main; sys.exit(main(sys.argv[1:]))'
    r = subprocess.run([sys.executable, '-c', code, '--quick', '--no-progress', '--output-dir', str(afile)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and 'exists and is not a folder' in r.stderr and 'Traceback' not in r.stderr
    assert afile.read_text() == 'keep me'


def test_user_errors_in_process(tmp_path, capsys):
    "The same `main` the command runs, called here: a bad device is a message and 1, --help is 0 (no interpreter to start)."
    assert main(['--device', 'tpu', '--output-dir', str(tmp_path / 'x')]) == 1
    err = capsys.readouterr().err
    assert "unknown device 'tpu'" in err and 'Traceback' not in err and not (tmp_path / 'x').exists()
    with pytest.raises(SystemExit) as e: main(['--help'])
    assert e.value.code == 0 and '--quick' in capsys.readouterr().out
