"""bert_book.engine, bert_book.service and bert_book.cli seen from outside: the real `bert-book serve` in its own process answers over
HTTP exactly what the engine and the NER pipeline answer in-process; bad requests get 422/413 with a message and
leave the service serving; concurrent requests are micro-batched and each gets its own answer; encode truncates at
the model's limit and flags it; SIGINT and SIGTERM end the server with exit status 0; the command line's help and
one-line errors."""
import importlib
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

httpx = importlib.import_module('httpx')
importlib.import_module('fastapi')
importlib.import_module('uvicorn')

from bert_book.core import BertConfig, seed_everything
from bert_book.data import load_corpus, load_sample, detokenize
from bert_book.heads import BertForMaskedLM, BertForTokenClassification
from bert_book.pretrained import save_pretrained
from bert_book.cli import ServeProcess, run_here
from bert_book.pretrained import folder_task
from bert_book.service import BackgroundServer, Limits, MicroBatcher, create_app
from bert_book.engine import Engine
from bert_book.token_classification import NERPipeline
from bert_book.tokenizer import train_wordpiece
import tiny

LABELS = ['O', 'B-LOC', 'I-LOC', 'B-ORG', 'I-ORG', 'B-PER', 'I-PER']
MAX_LENGTH = 32
ENV = {**os.environ, 'BERT_BOOK_DEVICE': 'cpu', 'OMP_NUM_THREADS': '1'}   # subprocesses share 2 cores with this one
TEXTS = ['Angela Merkel met Emmanuel Macron in Paris on Monday.', 'Dr. Zoë Müller flew from São Paulo to Zürich.',
         '', 'Shares of Siemens fell.']


def tiny_config(vocab_size: int, **kw) -> BertConfig:
    return tiny.tiny_config(vocab_size, num_hidden_layers=2, max_position_embeddings=MAX_LENGTH, **kw)


@pytest.fixture(scope='session')
def folders(tmp_path_factory):
    "A random-weight tagger (with entity labels) and masked language model, saved as model folders."
    root = tmp_path_factory.mktemp('models')
    tok = train_wordpiece(load_corpus()[:2000], vocab_size=800, model_max_length=MAX_LENGTH)
    seed_everything(0)
    tagger = BertForTokenClassification(tiny_config(tok.vocab_size, id2label=dict(enumerate(LABELS)))).eval()
    with torch.no_grad(): tagger.classifier.bias[1:] += 1.0   # make entities likely, so that there is something to compare
    mlm = BertForMaskedLM(tiny_config(tok.vocab_size)).eval()
    return save_pretrained(tagger, tok, root / 'tagger'), save_pretrained(mlm, tok, root / 'mlm')


@pytest.fixture(scope='session')
def engine(folders):
    return Engine.from_folder(folders[0], device='cpu')


@pytest.fixture(scope='module')
def server(folders):
    proc = ServeProcess(folders[0], '--max-texts', '8', '--max-chars', '2000', '--max-batch-size', '16', '--batch-wait-ms', '5',
                        env=ENV, threads=1).start()
    yield proc.url
    rc, err = proc.stop()
    assert rc == 0, err


def same_entities(got, want, eps=1e-5):
    strip = lambda ess: [[{k: v for k, v in e.items() if k != 'score'} for e in es] for es in ess]
    assert strip(got) == strip(want)
    for g, w in zip([e['score'] for es in got for e in es], [e['score'] for es in want for e in es]): assert abs(g - w) <= eps


# --- the engine -------------------------------------------------------------------------------------------------------

def test_folder_task(folders):
    assert folder_task(folders[0]) == 'token-classification' and folder_task(folders[1]) == 'masked-lm'


def test_engine_empty_inputs(engine):
    assert engine.encode([]) == [] and engine.ner([]) == []
    e = engine.encode([''])[0]
    assert e['tokens'] == ['[CLS]', '[SEP]'] and e['offsets'] == [(0, 0), (0, 0)] and not e['truncated']
    assert engine.ner(['']) == [[]]
    one = engine.encode('Paris')                        # one str: its one result, as a pipeline gives it
    assert one['tokens'] == engine.encode(['Paris'])[0]['tokens'] and engine.ner('') == []
    with pytest.raises(TypeError, match='got dict'): engine.encode({'text': 'Paris'})


def test_engine_encode_is_the_model_alone(engine, folders):
    "Batched and padded, each text's logits equal the model's on that text alone."
    for text, e in zip(TEXTS, engine.encode(TEXTS)):
        with torch.inference_mode(): alone = engine.model(torch.tensor([engine.tokenizer(text)['input_ids']])).logits[0]
        torch.testing.assert_close(e['logits'], alone, atol=1e-5, rtol=0)


# --- the service, over HTTP ---------------------------------------------------------------------------------------------

def test_health_and_model(server):
    assert httpx.get(f'{server}/health').json() == {'status': 'ok'}
    info = httpx.get(f'{server}/v1/model').json()
    assert info['task'] == 'token-classification' and info['labels'] == LABELS and info['max_length'] == MAX_LENGTH
    assert info['device'] == 'cpu' and info['limits']['max_texts'] == 8 and info['limits']['batching'] is True
    assert info['threads'] == 1                                              # serve --threads 1
    assert info['source'] == 'tagger' and '/' not in json.dumps(info)         # where it came from, no path leaked
    assert len(info['weights_sha256']) == 64 and int(info['weights_sha256'], 16) >= 0


def test_ner_over_http_equals_the_pipeline(server, engine, folders):
    got = httpx.post(f'{server}/v1/ner', json={'texts': TEXTS}).json()['results']
    want = NERPipeline(engine.model, engine.tokenizer)(TEXTS)
    same_entities(got, want)
    assert got[2] == [] and any(got)
    for text, es in zip(TEXTS, got):
        for e in es: assert text[e['start']:e['end']] == e['text']


def test_encode_over_http_equals_the_engine(server, engine):
    body = httpx.post(f'{server}/v1/encode', json={'texts': TEXTS}).json()
    assert body['labels'] == LABELS
    for got, want in zip(body['results'], engine.encode(TEXTS)):
        assert got['tokens'] == want['tokens'] and [tuple(o) for o in got['offsets']] == want['offsets']
        assert got['truncated'] is False
        torch.testing.assert_close(torch.tensor(got['logits']), want['logits'], atol=1e-5, rtol=0)
    probs = httpx.post(f'{server}/v1/encode', json={'texts': TEXTS[:1], 'return_probs': True}).json()['results'][0]['probs']
    torch.testing.assert_close(torch.tensor(probs).sum(-1), torch.ones(len(probs)), atol=1e-5, rtol=0)


def test_encode_at_the_limit_and_one_past(server, engine):
    at, past = ' '.join(['paris'] * (MAX_LENGTH - 2)), ' '.join(['paris'] * (MAX_LENGTH - 1))
    assert len(engine.tokenizer(past)['input_ids']) == MAX_LENGTH + 1
    a, p = httpx.post(f'{server}/v1/encode', json={'texts': [at, past]}).json()['results']
    assert (len(a['tokens']), a['truncated']) == (MAX_LENGTH, False)
    assert (len(p['tokens']), p['truncated']) == (MAX_LENGTH, True) and p['tokens'][-1] == '[SEP]'
    torch.testing.assert_close(torch.tensor(p['logits']), engine.encode([past])[0]['logits'], atol=1e-5, rtol=0)
    long_entities = httpx.post(f'{server}/v1/ner', json={'texts': [' '.join(TEXTS[:2] * 4)]}).json()['results'][0]
    assert long_entities and max(e['end'] for e in long_entities) > 300   # ner reads past the limit, in windows


@pytest.mark.parametrize('body, status, message', [
    ({'texts': []}, 422, 'texts: List should have at least 1 item'),
    ({'texts': 'Paris'}, 422, 'texts: Input should be a valid list'),
    ({'texts': ['Paris', 3]}, 422, 'texts.1: Input should be a valid string'),
    ({'text': ['Paris']}, 422, 'texts: Field required'),
    ({'texts': ['Paris'] * 9}, 413, 'more than this service\'s limit of 8 (--max-texts)'),
    ({'texts': ['ok', 'x' * 2001]}, 413, 'texts[1] has 2001 characters, more than this service\'s limit of 2000'),
])
def test_bad_requests(server, engine, body, status, message):
    r = httpx.post(f'{server}/v1/ner', json=body)
    assert r.status_code == status and message in r.json()['detail'], r.text
    r = httpx.post(f'{server}/v1/ner', content=b'{not json', headers={'content-type': 'application/json'})
    assert r.status_code == 422 and 'JSON' in r.json()['detail']
    same_entities(httpx.post(f'{server}/v1/ner', json={'texts': TEXTS[:1]}).json()['results'], engine.ner(TEXTS[:1]))


def test_fill_mask_on_a_tagger_is_404(server):
    r = httpx.post(f'{server}/v1/fill-mask', json={'texts': ['The [MASK] fell.']})
    assert r.status_code == 404 and 'token-classification model' in r.json()['detail']


def test_concurrent_requests_are_batched_and_each_answered(server, engine):
    sentences = [detokenize(s.tokens) for s in load_sample('dev')[:48]]
    requests = [sentences[i:i + (1 + i % 2)] for i in range(0, 48, 2)]          # 24 requests of 1 or 2 texts
    before = httpx.get(f'{server}/v1/model').json()['micro_batching']
    answers, barrier = [None] * len(requests), threading.Barrier(len(requests))

    def client(i):
        barrier.wait()
        answers[i] = httpx.post(f'{server}/v1/ner', json={'texts': requests[i]}, timeout=60).json()['results']

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for t in threads: t.start()
    for t in threads: t.join()
    for req, got in zip(requests, answers): same_entities(got, engine.ner(req))
    after = httpx.get(f'{server}/v1/model').json()['micro_batching']
    assert after['requests'] - before['requests'] == len(requests)
    assert after['batches'] - before['batches'] <= len(requests)     # how many shared a call depends on timing: see below


def test_requests_queued_while_the_model_runs_share_one_call():
    "Deterministic: the first batch holds the model (an event, not a sleep) while 20 more requests queue; they then run as 2 calls of <= 16 texts."
    entered, release, calls = threading.Event(), threading.Event(), []

    def run(method, texts):
        calls.append(len(texts))
        if len(calls) == 1: entered.set(); release.wait(60)
        return texts

    async def scenario():
        b = MicroBatcher(run, max_batch_size=16, wait_ms=0)
        await b.start()
        first = asyncio.ensure_future(b.submit('m', ['first']))
        await asyncio.to_thread(entered.wait, 60)                # the model is busy with 'first'
        rest = [asyncio.ensure_future(b.submit('m', [f't{i}'])) for i in range(20)]
        await asyncio.sleep(0)
        release.set()
        got = await asyncio.gather(first, *rest)
        await b.stop()
        return got, b.stats

    got, stats = asyncio.run(scenario())
    assert got == [['first']] + [[f't{i}'] for i in range(20)]
    assert calls == [1, 16, 4] and stats['batches'] == 3 and stats['requests'] == 21


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_clean_shutdown(folders, sig):
    proc = ServeProcess(folders[0], env=ENV, threads=1).start()
    assert httpx.post(f'{proc.url}/v1/ner', json={'texts': TEXTS}).status_code == 200
    rc, err = proc.stop(sig)
    assert rc == 0 and 'Traceback' not in err, err


# --- in-process: the masked language model, no batching, the micro-batcher's failures ---------------------------------

def test_fill_mask_service(folders):
    mlm = Engine.from_folder(folders[1], device='cpu')
    with BackgroundServer(create_app(mlm)) as url:
        r = httpx.post(f'{url}/v1/fill-mask', json={'texts': ['The [MASK] fell in [MASK].'], 'top_k': 3})
        assert r.status_code == 200 and r.json()['results'] == mlm.fill_mask(['The [MASK] fell in [MASK].'], top_k=3)
        assert len(r.json()['results'][0]) == 2 and len(r.json()['results'][0][0]) == 3
        r = httpx.post(f'{url}/v1/fill-mask', json={'texts': ['no mask']})
        assert r.status_code == 400 and 'holds no [MASK]' in r.json()['detail']
        assert httpx.post(f'{url}/v1/ner', json={'texts': ['Paris']}).status_code == 404
        assert httpx.post(f'{url}/v1/fill-mask', json={'texts': ['[MASK]'], 'top_k': 0}).status_code == 422


def test_fill_mask_never_proposes_a_padding_row(folders):
    "A model whose embedding has more rows than the tokenizer has ids (padded to a multiple of 8): only real ids come back."
    mlm = Engine.from_folder(folders[1], device='cpu')
    V = mlm.tokenizer.vocab_size
    padded = BertForMaskedLM(tiny_config(V + 8)).eval()
    with torch.no_grad():
        for name, p in padded.state_dict().items():
            q = mlm.model.state_dict()[name]
            p[:q.shape[0]].copy_(q)
        padded.cls.predictions.bias[V:] = 100.0                  # the padding rows would be every mask's top candidates
    engine = Engine(padded, mlm.tokenizer, 'masked-lm')
    text = ['The [MASK] fell in [MASK].']
    assert engine.fill_mask(text, top_k=5) == mlm.fill_mask(text, top_k=5)
    with BackgroundServer(create_app(engine)) as url:
        r = httpx.post(f'{url}/v1/fill-mask', json={'texts': text, 'top_k': 5})
    assert r.status_code == 200, r.text
    assert all(c['token_id'] < V for m in r.json()['results'][0] for c in m)


def test_a_request_whose_client_left_is_not_run(folders):
    """The model is held busy (an event); a second client sends a request and disconnects; once the server has withdrawn
    it (a counter, polled within a bound), the model is released and never sees that request's text."""
    engine = Engine.from_folder(folders[0], device='cpu')
    busy, release, seen = threading.Event(), threading.Event(), []
    real_ner = engine.ner

    def ner(texts):
        seen.extend(texts)
        if 'hold' in texts: busy.set(); release.wait(60)
        return real_ner(texts)

    engine.ner = ner                                             # the batcher calls getattr(engine, method)
    with BackgroundServer(create_app(engine, Limits(batch_wait_ms=0))) as url:
        holder = threading.Thread(target=lambda: httpx.post(f'{url}/v1/ner', json={'texts': ['hold']}, timeout=60))
        holder.start()
        assert busy.wait(60)
        with pytest.raises(httpx.ReadTimeout):                  # the client gives up and closes its connection
            httpx.post(f'{url}/v1/ner', json={'texts': ['left']}, timeout=httpx.Timeout(60, read=0.5))
        stats = lambda: httpx.get(f'{url}/v1/model', timeout=60).json()['micro_batching']
        for _ in range(600):                                     # a bound (60 s), not a window: usually the first poll
            if stats()['cancelled'] == 1: break
            threading.Event().wait(0.1)
        assert stats()['cancelled'] == 1
        release.set(); holder.join(60)
        after = httpx.post(f'{url}/v1/ner', json={'texts': ['after']}, timeout=60)
        assert after.status_code == 200
    assert seen == ['hold', 'after']                           # 'left' never reached the model


def test_micro_batcher_skips_a_withdrawn_request():
    seen = []

    async def scenario():
        b = MicroBatcher(lambda method, texts: seen.extend(texts) or texts, max_batch_size=8, wait_ms=50)
        await b.start()
        stays, leaves = asyncio.ensure_future(b.submit('m', ['stays'])), asyncio.ensure_future(b.submit('m', ['leaves']))
        await asyncio.sleep(0)
        leaves.cancel()
        got = await stays
        await b.stop()
        return got, leaves.cancelled(), b.stats

    got, cancelled, stats = asyncio.run(scenario())
    assert (got, cancelled, seen, stats['cancelled']) == (['stays'], True, ['stays'], 1)


def test_load_test_counts_every_request(engine):
    "Bounded by a count only: the numbers are exact on any machine; every client sends at least one request."
    from bert_book.loadtest import load_test
    with BackgroundServer(create_app(engine)) as url:
        r = load_test(url, [{'texts': [t]} for t in TEXTS], clients=5, seconds=None, max_requests=23)
        assert (r['requests'], r['errors'], r['statuses']) == (23, 0, {200: 23})
        r = load_test(url, [{'texts': [t]} for t in TEXTS], clients=4, seconds=0.0)   # the clock already out: one each
        assert (r['requests'], r['errors']) == (4, 0)
        with pytest.raises(ValueError, match='needs a bound'): load_test(url, [{'texts': ['x']}], seconds=None)


def test_no_batching_answers_the_same(engine):
    with BackgroundServer(create_app(engine, Limits(batching=False))) as url:
        same_entities(httpx.post(f'{url}/v1/ner', json={'texts': TEXTS}).json()['results'], engine.ner(TEXTS))
        assert httpx.get(f'{url}/v1/model').json()['micro_batching'] is None


def test_micro_batcher_isolates_a_failing_request():
    calls = []

    def run(method, texts, **kw):
        calls.append(list(texts))
        if 'boom' in texts: raise RuntimeError('boom')
        return [t.upper() for t in texts]

    async def scenario():
        b = MicroBatcher(run, max_batch_size=8, wait_ms=20)
        await b.start()
        got = await asyncio.gather(b.submit('m', ['a']), b.submit('m', ['boom']), b.submit('m', ['b', 'c']),
                                   return_exceptions=True)
        later = await b.submit('m', ['d'])             # the worker survived
        await b.stop()
        with pytest.raises(RuntimeError, match='not running'): await b.submit('m', ['e'])
        return got, later, b.stats

    got, later, stats = asyncio.run(scenario())
    assert got[0] == ['A'] and got[2] == ['B', 'C'] and isinstance(got[1], RuntimeError) and later == ['D']
    assert calls[0] == ['a', 'boom', 'b', 'c'] and stats['failed_batches'] == 1


def test_micro_batcher_finishes_queued_requests_on_stop():
    async def scenario():
        b = MicroBatcher(lambda m, texts: [len(t) for t in texts], max_batch_size=2, wait_ms=1)
        await b.start()
        tasks = [asyncio.create_task(b.submit('m', ['x' * i])) for i in range(7)]
        await asyncio.sleep(0)                        # let them all reach the queue
        await b.stop()
        return [t.result() for t in tasks]

    assert asyncio.run(scenario()) == [[i] for i in range(7)]


# --- the command line ---------------------------------------------------------------------------------------------------

def bert_book(*args, stdin=None):
    p = subprocess.run([sys.executable, '-m', 'bert_book.cli', *map(str, args)], input=stdin, capture_output=True,
                       text=True, timeout=120, env=ENV)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize('command', [None, 'train-mlm', 'train-ner', 'predict', 'serve'])
def test_help(command, capsys):
    from bert_book.cli import main
    with pytest.raises(SystemExit) as e: main(([command] if command else []) + ['--help'])
    assert e.value.code == 0 and 'usage: bert-book' in capsys.readouterr().out


def test_demo_forwards_its_arguments(capsys, tmp_path):
    from bert_book.cli import main
    with pytest.raises(SystemExit) as e: main(['demo', '--help'])
    assert e.value.code == 0 and '--quick' in capsys.readouterr().out
    afile = tmp_path / 'afile'; afile.write_text('x')
    assert main(['demo', '--quick', '--no-progress', '--output-dir', str(afile)]) == 1      # the demo's own check
    assert 'bert-book demo: error:' in capsys.readouterr().err and afile.read_text() == 'x'


def test_predict_prints_entities(folders, engine):
    rc, out, err = bert_book('predict', folders[0], *TEXTS[:2])
    assert rc == 0, err
    lines = [json.loads(l) for l in out.splitlines()]
    assert [l['text'] for l in lines] == TEXTS[:2]
    same_entities([l['entities'] for l in lines], engine.ner(TEXTS[:2]))


def test_user_errors_are_one_line(folders, tmp_path, capsys):
    "Each mistake: exit status 1 and one line `bert-book: error: ...` naming what and where, no traceback."
    from bert_book.cli import main
    bad = tmp_path / 'bad.conll'
    bad.write_text('Paris B-LOC\nis O\nnice\n')
    cases = {('predict', tmp_path / 'missing', 'Paris'): 'no model folder at',
             ('predict', tmp_path, 'Paris'): 'no config file at',
             ('predict', folders[1], 'Paris'): 'masked-lm model',
             ('train-mlm', '--corpus', tmp_path / 'none.txt', '--output-dir', tmp_path / 'o'): 'no corpus file at',
             ('train-ner', '--train', bad, '--dev', bad, '--output-dir', folders[0]): 'already holds a model',
             ('train-ner', '--train', bad, '--dev', bad, '--output-dir', tmp_path / 'o'): 'bad.conll, line 3'}
    for args, message in cases.items():
        assert main([str(a) for a in args]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith('bert-book: error: ') and message in err and len(err.strip().splitlines()) == 1, (args, err)
    rc, out, err = bert_book(*list(cases)[-1])                 # and so from the real command, in its own process
    assert rc == 1 and 'Traceback' not in err and 'bad.conll, line 3' in err, err


def test_train_commands_write_model_folders(tmp_path):
    corpus = tmp_path / 'corpus.txt'
    corpus.write_text('\n'.join(load_corpus()[:300]), encoding='utf-8')
    rc, out, err = run_here('train-mlm', '--corpus', corpus, '--output-dir', tmp_path / 'mlm', '--size', 'tiny',
                             '--vocab-size', 500, '--max-length', 32, '--max-steps', 3, '--no-progress')
    assert rc == 0, err
    assert folder_task(tmp_path / 'mlm') == 'masked-lm' and json.loads(out)['texts'] == 300
    train = tmp_path / 'train.conll'
    train.write_text('\n\n'.join('\n'.join(f'{t} {g}' for t, g in zip(s.tokens, s.tags)) for s in load_sample('train')[:64]) + '\n')
    rc, out, err = run_here('train-ner', '--train', train, '--dev', train, '--encoder', tmp_path / 'mlm',
                             '--output-dir', tmp_path / 'ner', '--max-steps', 2, '--no-progress')
    assert rc == 0, err
    assert folder_task(tmp_path / 'ner') == 'token-classification'
    assert Engine.from_folder(tmp_path / 'ner', device='cpu').max_length == 32   # the encoder's shape and tokenizer


def test_the_engine_works_without_the_serve_extra(folders):
    "Without fastapi, pydantic, uvicorn and httpx the engine still loads and tags; the service names the extra to install."
    code = f'''
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('fastapi', 'pydantic', 'uvicorn', 'httpx', 'starlette'): raise ImportError(f'blocked: {{name}}')
sys.meta_path.insert(0, Block())
from bert_book.engine import Engine
from bert_book.service import create_app
engine = Engine.from_folder({str(folders[0])!r}, device='cpu')
assert engine.ner(['Paris']) is not None
try: create_app(engine)
except ImportError as e: print(e)
'''
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode == 0, p.stderr
    assert 'pip install "bert_book[serve]"' in p.stdout


# --- the sentence classifier ------------------------------------------------------------------------------------------

def test_classify_engine_and_service(tiny_folders):
    "classify: a label and every label's probability per text, the same alone and in a batch, alone and over HTTP."
    folder = tiny_folders['classifier']
    assert folder_task(folder) == 'sequence-classification'
    eng = Engine.from_folder(folder, device='cpu')
    texts = ['A triumph.', 'Two hours I will not get back.', 'word ' * 100, '😀 東京']
    got = eng.classify(texts)
    assert [r['truncated'] for r in got] == [False, False, True, False]
    for t, r in zip(texts, got):
        assert set(r['scores']) == {'negative', 'positive'} and abs(sum(r['scores'].values()) - 1) < 1e-5
        assert r['label'] == max(r['scores'], key=r['scores'].get) and r['score'] == r['scores'][r['label']]
        assert abs(eng.classify([t])[0]['scores']['positive'] - r['scores']['positive']) < 1e-5
    assert eng.classify([]) == []
    with pytest.raises(ValueError, match='not ner'): eng.ner(['x'])
    proc = ServeProcess(folder, '--max-texts', '4', '--max-chars', '500', env=ENV, threads=1).start()
    try:
        r = httpx.post(f'{proc.url}/v1/classify', json={'texts': texts}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body['labels'] == ['negative', 'positive'] and len(body['results']) == 4
        for a, b in zip(body['results'], got):
            assert a['label'] == b['label'] and abs(a['score'] - b['score']) < 1e-5
        info = httpx.get(f'{proc.url}/v1/model', timeout=60).json()
        assert info['task'] == 'sequence-classification' and info['labels'] == ['negative', 'positive'] and info['methods'] == ['classify', 'score', 'rerank']
        bad = {'too many texts': ({'texts': ['a'] * 5}, 413), 'too long a text': ({'texts': ['a' * 501]}, 413),
               'not a list': ({'texts': 'a'}, 422), 'empty list': ({'texts': []}, 422), 'unknown field': ({'texts': ['a'], 'top_k': 3}, 422)}
        for name, (payload, status) in bad.items():
            r = httpx.post(f'{proc.url}/v1/classify', json=payload, timeout=60)
            assert r.status_code == status and r.json()['detail'], (name, r.status_code, r.text)
        assert httpx.post(f'{proc.url}/v1/ner', json={'texts': ['a']}, timeout=60).status_code == 404
        assert httpx.post(f'{proc.url}/v1/classify', json={'texts': texts[:1]}, timeout=60).json()['results'][0]['label'] == got[0]['label']
    finally:
        rc, err = proc.stop()
    assert rc == 0, err


def test_train_cls_and_predict_from_the_command_line(tmp_path):
    import csv
    from bert_book.datasets import rotten_tomatoes
    for name, xs in (('train.csv', rotten_tomatoes('train')[::50][:120]), ('dev.csv', rotten_tomatoes('dev')[::40][:30])):
        with open(tmp_path / name, 'w', newline='') as f:
            w = csv.writer(f); w.writerow(['text', 'label']); w.writerows((x.text, x.label) for x in xs)
    rc, out, err = run_here('train-cls', '--train', tmp_path / 'train.csv', '--dev', tmp_path / 'dev.csv', '--output-dir',
                                  tmp_path / 'cls', '--size', 'tiny', '--vocab-size', 500, '--max-length', 32, '--max-steps', 3, '--no-progress')
    assert rc == 0, err
    assert json.loads(out)['labels'] == ['negative', 'positive'] and folder_task(tmp_path / 'cls') == 'sequence-classification'
    rc, out, err = bert_book('predict', tmp_path / 'cls', 'A triumph.', 'Dull.')
    assert rc == 0, err
    lines = [json.loads(l) for l in out.splitlines()]
    assert [l['text'] for l in lines] == ['A triumph.', 'Dull.'] and all(l['label'] in ('negative', 'positive') for l in lines)
    (tmp_path / 'bad.csv').write_text('text,label\nfine,positive\n,negative\n')
    rc, out, err = run_here('train-cls', '--train', tmp_path / 'bad.csv', '--dev', tmp_path / 'dev.csv', '--output-dir', tmp_path / 'x')
    assert rc == 1 and 'bad.csv, line 3: the text is empty' in err and 'Traceback' not in err, err


def _regression_folder(tiny_folders, root):
    "A one-output (regression) sentence model: the tiny classifier's encoder with one output, its bias set to 3.7."
    from bert_book.heads import BertForSequenceClassification
    from bert_book.pretrained import load_config
    from bert_book.tokenizer import BertTokenizer
    cfg = load_config(tiny_folders['classifier'], num_labels=1, id2label={0: 'rating'}, label2id={'rating': 0})
    seed_everything(0)
    reg = BertForSequenceClassification(cfg).eval()
    with torch.no_grad(): reg.classifier.bias.fill_(3.7)
    tok = BertTokenizer.from_pretrained(tiny_folders['classifier'])
    return save_pretrained(reg, tok, root / 'regression'), reg, tok


def test_a_regression_model_is_served_as_its_value(tiny_folders, tmp_path):
    "num_labels == 1: the raw output as `value` (no softmax, no sigmoid), as transformers' pipeline for regression."
    folder, reg, tok = _regression_folder(tiny_folders, tmp_path)
    eng = Engine.from_folder(folder, device='cpu')
    texts = ['A triumph.', 'Two hours I will not get back.', 'word ' * 100]
    got = eng.classify(texts)
    want = [reg(torch.tensor([ids[:31] + ids[-1:] if len(ids) > 32 else ids])).logits[0, 0].item() for ids in tok(texts)['input_ids']]
    assert [set(r) for r in got] == [{'label', 'value', 'truncated'}] * 3 and {r['label'] for r in got} == {'rating'}
    assert [r['value'] for r in got] == pytest.approx(want, abs=1e-5)
    from bert_book.service import engine_info
    assert engine_info(eng)['outputs'] == 'value'
    with BackgroundServer(create_app(eng)) as url:
        body = httpx.post(f'{url}/v1/classify', json={'texts': texts}, timeout=60).json()
    assert body['labels'] == ['rating'] and [r['value'] for r in body['results']] == pytest.approx(want, abs=1e-5)


def test_int8_engine_says_its_answers_depend_on_the_batch(tiny_folders):
    from bert_book.service import engine_info
    f32, int8 = (Engine.from_folder(tiny_folders['classifier'], device='cpu', quantize=q) for q in (None, 'int8'))
    assert engine_info(f32)['batch_invariant'] is True and engine_info(int8)['batch_invariant'] is False
    assert engine_info(f32)['outputs'] == 'probabilities'
    rc, out, _ = bert_book('serve', '--help')
    assert rc == 0 and 'answers depend on the other texts' in ' '.join(out.split())
