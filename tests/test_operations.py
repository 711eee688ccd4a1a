"""bert_book.operations seen from outside, through a real `bert-book serve` process: the API key on every route but
the probes, request ids, the JSON access log (never the texts, never the key), Prometheus metrics that move by the
requests sent, readiness before and after load, SIGTERM with requests in flight, and two workers on one port."""
import importlib, json, os, signal, threading, time

import pytest

httpx = importlib.import_module('httpx')
importlib.import_module('prometheus_client')
from prometheus_client.parser import text_string_to_metric_families

from bert_book.cli import ServeProcess
from bert_book.loadtest import load_test
from bert_book.operations import API_KEY_ENV, resolve_api_key, serve

KEY = 'ops-test-key-5d2b'
AUTH = {'Authorization': f'Bearer {KEY}'}
ENV = {**os.environ, 'BERT_BOOK_DEVICE': 'cpu', 'OMP_NUM_THREADS': '1', API_KEY_ENV: KEY}
TEXTS = ['Angela Merkel met Emmanuel Macron in Paris.', 'Shares of Siemens fell in Zürich.', 'Talks resumed.']
GOOD = {'/v1/ner': {'texts': TEXTS}, '/v1/encode': {'texts': TEXTS}, '/v1/classify': {'texts': TEXTS},
        '/v1/fill-mask': {'texts': ['The [MASK] fell.']}}
SERVED = {'tagger': ('/v1/ner', '/v1/encode'), 'mlm': ('/v1/fill-mask',), 'classifier': ('/v1/classify',)}


def wait_ready(url: str, timeout: float = 120) -> list[str]:
    "Poll /ready (no key: it is a probe) until 200; the statuses seen, in order."
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f'{url}/ready', timeout=10)
        seen.append(r.json()['status'])
        if r.status_code == 200: return seen
        time.sleep(0.02)
    raise AssertionError(f'not ready after {timeout} s: {seen[-5:]}')


def metrics(url: str) -> dict:
    "The samples of /metrics by (name, sorted labels), parsed by prometheus_client's own parser."
    text = httpx.get(f'{url}/metrics', headers=AUTH, timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.parametrize('task', ['tagger', 'mlm', 'classifier'])
def test_the_key_on_every_route_but_the_probes(tiny_folders, task):
    with ServeProcess(tiny_folders[task], env=ENV, threads=1) as proc:
        wait_ready(proc.url)
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            for path in ('/health', '/ready'):
                assert c.get(path).status_code == 200, path                    # probes need no key
            gets = [('GET', p, None) for p in ('/v1/model', '/metrics', '/openapi.json')]
            for method, path, body in gets + [('POST', p, GOOD[p]) for p in SERVED[task]]:
                codes = [c.request(method, path, json=body, headers=h).status_code
                         for h in ({}, {'Authorization': 'Bearer wrong'}, {'Authorization': KEY}, AUTH)]
                assert codes == [401, 401, 401, 200], (path, codes)
            refused = c.post(SERVED[task][0], json=GOOD[SERVED[task][0]])
            assert refused.headers['www-authenticate'] == 'Bearer' and 'API key' in refused.json()['detail']
            assert KEY not in refused.text
        rc, err = proc.stop()
    assert rc == 0 and 'Traceback' not in err and KEY not in err, err[-2000:]


def test_request_ids_and_the_json_access_log(tiny_folders):
    with ServeProcess(tiny_folders['tagger'], '--log-format', 'json', '--log-level', 'info', env=ENV, threads=1) as proc:
        wait_ready(proc.url)
        with httpx.Client(base_url=proc.url, headers=AUTH, timeout=60) as c:
            mine = c.post('/v1/ner', json={'texts': TEXTS}, headers={'X-Request-ID': 'order-4711'})
            forged = c.post('/v1/ner', json={'texts': TEXTS[:1]}, headers={'X-Request-ID': 'x\u0007' + 'y' * 300})
            made = c.post('/v1/ner', json={'texts': TEXTS[:1]})
            bad = c.post('/v1/ner', json={'texts': []})                          # a 422 has an id too
        rc, err = proc.stop()
    assert rc == 0, err[-2000:]
    assert mine.headers['x-request-id'] == 'order-4711'
    assert len(forged.headers['x-request-id']) == 32 and len(made.headers['x-request-id']) == 32
    assert bad.status_code == 422 and len(bad.headers['x-request-id']) == 32
    log = [json.loads(line) for line in err.splitlines() if line.startswith('{')]
    by_id = {entry['request_id']: entry for entry in log}
    entry = by_id['order-4711']
    assert (entry['route'], entry['status'], entry['texts'], entry['method']) == ('/v1/ner', 200, 3, 'POST')
    assert entry['tokens'] >= 3 * 3 and entry['latency_ms'] > 0
    assert by_id[bad.headers['x-request-id']]['status'] == 422
    assert not any(t in err for t in TEXTS) and KEY not in err and 'y' * 300 not in err


def test_metrics_move_by_the_requests_sent(tiny_folders):
    with ServeProcess(tiny_folders['tagger'], env=ENV, threads=1) as proc:
        wait_ready(proc.url)
        before = metrics(proc.url)
        with httpx.Client(base_url=proc.url, headers=AUTH, timeout=60) as c:
            for i in range(7): assert c.post('/v1/ner', json={'texts': TEXTS[:1 + i % 3]}).status_code == 200
            assert c.post('/v1/encode', json={'texts': ['word ' * 100]}).json()['results'][0]['truncated']
            assert c.post('/v1/ner', json={'texts': []}).status_code == 422
            assert c.get('/no-such-route').status_code == 404
        after = metrics(proc.url)
        rc, err = proc.stop()
    assert rc == 0, err[-2000:]
    moved = lambda name, **labels: after.get((name, tuple(sorted(labels.items()))), 0) - \
        before.get((name, tuple(sorted(labels.items()))), 0)
    assert moved('bert_book_requests_total', route='/v1/ner', status='200') == 7
    assert moved('bert_book_requests_total', route='/v1/ner', status='422') == 1
    assert moved('bert_book_requests_total', route='other', status='404') == 1      # no label from a client's path
    assert moved('bert_book_texts_total', route='/v1/ner') == sum(1 + i % 3 for i in range(7))
    assert moved('bert_book_request_duration_seconds_count', route='/v1/ner') == 8
    assert moved('bert_book_truncated_texts_total') == 1
    assert moved('bert_book_batch_texts_sum') == sum(1 + i % 3 for i in range(7)) + 1
    assert moved('bert_book_tokens_total') >= 100
    assert ('bert_book_queue_depth', ()) in after and ('bert_book_ood_flagged_texts_total', ()) in after


def test_ready_before_and_after_load(tiny_folders):
    with ServeProcess(tiny_folders['tagger'], env=ENV, threads=1) as proc:
        seen = wait_ready(proc.url)
        assert seen[-1] == 'ready' and set(seen) <= {'warming up', 'ready'}
        run = load_test(proc.url, [{'texts': [t]} for t in TEXTS], clients=4, seconds=None, max_requests=40,
                        headers=AUTH)
        assert (run['requests'], run['errors']) == (40, 0)
        assert httpx.get(f'{proc.url}/ready').json() == {'status': 'ready'}
        assert metrics(proc.url)[('bert_book_requests_total', (('route', '/v1/ner'), ('status', '200')))] == 40
        rc, err = proc.stop()
    assert rc == 0, err[-2000:]


def test_sigterm_with_requests_in_flight_loses_none(tiny_folders):
    proc = ServeProcess(tiny_folders['tagger'], env=ENV, threads=1).start()
    wait_ready(proc.url)
    answers, failures, stop = [], [], threading.Event()

    def client():
        with httpx.Client(base_url=proc.url, headers=AUTH, timeout=60) as c:
            while not stop.is_set():
                try: answers.append(c.post('/v1/ner', json={'texts': TEXTS * 4}).status_code)
                except httpx.ConnectError: return                       # the port is closed: never accepted
                except httpx.HTTPError as e: failures.append(repr(e)); return
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads: t.start()
    deadline = time.monotonic() + 120
    while len(answers) < 12 and time.monotonic() < deadline: time.sleep(0.01)
    stop.set()                                    # each client has at most one request in flight now
    rc, err = proc.stop(signal.SIGTERM)
    for t in threads: t.join(60)
    assert rc == 0 and 'Traceback' not in err, err[-2000:]
    assert len(answers) >= 12 and set(answers) == {200} and failures == [], (len(answers), set(answers), failures)


def test_two_workers_answer_on_one_port(tiny_folders):
    with ServeProcess(tiny_folders['tagger'], '--workers', 2, env=ENV, threads=2) as proc:
        wait_ready(proc.url)
        pids = set()
        for _ in range(300):                                # a new connection each time: the kernel picks a worker
            pids.add(httpx.get(f'{proc.url}/v1/model', headers=AUTH, timeout=60).json()['pid'])
            if len(pids) == 2: break
        run = load_test(proc.url, [{'texts': [t]} for t in TEXTS], clients=4, seconds=None, max_requests=60,
                        headers=AUTH)
        threads = httpx.get(f'{proc.url}/v1/model', headers=AUTH, timeout=60).json()['threads']
        rc, err = proc.stop()
    assert len(pids) == 2 and proc.pid not in pids                # two workers, neither of them the parent
    assert (run['requests'], run['errors']) == (60, 0)
    assert threads == 1                                           # each its share of --threads 2
    assert rc == 0 and 'Traceback' not in err, err[-2000:]


def test_the_options_are_checked(tiny_folders, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert resolve_api_key() is None and resolve_api_key('k') == 'k'
    monkeypatch.setenv(API_KEY_ENV, 'from-env')
    assert resolve_api_key() == 'from-env' and resolve_api_key('option-wins') == 'option-wins'
    for bad in ('', ' ', 'tab\tkey', 'clé'):
        with pytest.raises(ValueError, match='printable ASCII'): resolve_api_key(bad)
    for kw, match in (({'workers': 0}, 'workers must be a positive int'), ({'threads': -1}, 'threads must be'),
                      ({'log_format': 'xml'}, "log_format='xml'")):
        with pytest.raises(ValueError, match=match): serve(tiny_folders['tagger'], **kw)
    with pytest.raises(FileNotFoundError, match='no model folder'): serve('/no/such/folder')


def test_draining_after_sigterm_until_a_second_signal(tiny_folders):
    proc = ServeProcess(tiny_folders['tagger'], '--drain-seconds', 600, env=ENV, threads=1).start()
    wait_ready(proc.url)
    proc.proc.send_signal(signal.SIGTERM)                  # the port stays open while it drains: 600 s, or a second signal
    with httpx.Client(base_url=proc.url, timeout=60) as c:
        ready = c.get('/ready')
        answered = c.post('/v1/ner', json={'texts': TEXTS}, headers=AUTH)
        health = c.get('/health')
    rc, err = proc.stop(signal.SIGTERM)                    # the second signal: stop now
    assert (ready.status_code, ready.json()) == (503, {'status': 'draining'})
    assert answered.status_code == 200 and answered.headers['connection'] == 'close'
    assert health.status_code == 200                       # alive while it drains
    assert rc == 0 and 'Traceback' not in err, err[-2000:]
