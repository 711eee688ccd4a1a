"""The service under abuse: a real `bert-book serve` subprocess (loopback, one torch thread) gets malformed JSON, wrong
types at every field of every route it publishes, deep nesting, invalid UTF-8, lone surrogates, control characters,
empty, emoji, RTL and CJK texts, a 1M-character text, thousands of texts, a body past the limit, huge headers, unknown
paths and methods, and seeded random bytes sent concurrently. Every answer is < 500 and every error a 4xx with a short
JSON `detail` (on OpenAI's and vLLM's routes, OpenAI's `error.message`); nothing hangs (each request has a timeout, the whole run a count); the same good request gets the same
answer before and after; the server then stops cleanly on SIGTERM.

The routes are read from the server's own OpenAPI schema, so a route added later (e.g. /v1/embeddings) is fuzzed too;
four servers: a tagger, a masked LM, a sentence classifier and an encoder (the one that answers the pooling routes)."""
import importlib
import json
import os
import random
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = importlib.import_module('httpx')
importlib.import_module('fastapi')

from bert_book.cli import ServeProcess

KEY = 'fuzz-key-7c1e'   # the server runs with an API key: everything below but the probes sends it
ENV = {**os.environ, 'BERT_BOOK_DEVICE': 'cpu', 'BERT_BOOK_API_KEY': KEY}
AUTH = {'Authorization': f'Bearer {KEY}'}
TIMEOUT = 60            # seconds any one request may take: a hang fails the test instead of blocking the suite
MAX_CHARS = 2000
SEED = 1234
STATS = Counter()       # every status seen, for the report at the end of the module

# Texts of every kind a client may send; the service must answer each (200, or a 4xx that says why).
WEIRD_TEXTS = ['', ' ', '\t\n\r ', '\x00', 'a\x00b', '\x1b[31mred\x1b[0m', '\x7f\x85\u2028\u2029', '\ufeffBOM',
               '😀', '👩🏽‍🔬 met 🇫🇷 in Paris', 'שלום עולם', 'مرحبا بالعالم', '\u202eevil\u202c', '東京で会議があった。',
               '한국어 텍스트', 'Z̸̢͉a̴l̶g̷o̵', 'x' * MAX_CHARS, 'word ' * (MAX_CHARS // 5), '[MASK]', '[CLS] [SEP] [PAD]',
               'The [MASK] fell in [MASK].', '😀 [MASK] 東京']


@pytest.fixture(scope='module', params=['tagger', 'mlm', 'classifier', 'encoder'])
def server(request, tiny_folders, tiny_folder):
    folder = tiny_folder('encoder') if request.param == 'encoder' else tiny_folders[request.param]
    proc = ServeProcess(folder, '--max-chars', MAX_CHARS, '--max-texts', 64, env=ENV, threads=1).start()
    yield proc
    if proc.proc.poll() is None:
        rc, err = proc.stop()
        assert rc == 0 and 'Traceback' not in err, err


def routes(url) -> dict[str, dict]:
    "The server's POST routes and the JSON schema of each one's body, from its OpenAPI document."
    spec = httpx.get(f'{url}/openapi.json', timeout=TIMEOUT, headers=AUTH).json()
    out = {}
    for path, methods in spec['paths'].items():
        if 'post' in methods:
            ref = methods['post']['requestBody']['content']['application/json']['schema']['$ref']
            out[path] = spec['components']['schemas'][ref.rsplit('/', 1)[-1]]
    return out


def check_answer(r: httpx.Response, what) -> int:
    "Count the status; a 5xx fails; a 4xx must carry a short JSON `detail` (OpenAI's `error.message` on its routes)."
    STATS[r.status_code] += 1
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.headers.get('content-type', '').startswith('application/json'), (what, r.status_code, r.text[:200])
        body = r.json()
        detail = body['detail'] if 'detail' in body else body['error']['message']
        assert isinstance(detail, str) and detail, (what, r.text[:200])
        assert len(r.content) < 4000, (what, len(r.content))      # a 1M-character input is never echoed
    return r.status_code


WRONG = [None, 0, -1, 1.5, True, 'x', '', [], {}, [1], [None], [True], [[]], [{}], [['a']], {'a': 1}, 10**40]


def wrong_for(schema: dict) -> list:
    "The values of WRONG that do not fit `schema` (a property of a request body)."
    t = schema.get('type')
    def fits(v):
        if t == 'array': return isinstance(v, list) and v and all(isinstance(x, str) for x in v)
        if t == 'boolean': return isinstance(v, bool)
        if t == 'integer': return isinstance(v, int) and not isinstance(v, bool) and schema.get('minimum', -1e99) <= v <= schema.get('maximum', 1e99)
        if t == 'string': return isinstance(v, str)
        return True
    return [v for v in WRONG if not fits(v)]


GOOD = ['Angela Merkel met Emmanuel Macron in [MASK] on Monday.', 'Shares of Siemens fell.  [MASK]']


def with_texts(path: str, texts) -> dict:
    "A body for `path` whose list of texts is `texts`: `input` (OpenAI), `text_2` or `documents` (vLLM), else `texts`."
    if path == '/v1/embeddings': return {'input': texts}
    if path == '/v1/score': return {'text_1': 'Who met Macron?', 'text_2': texts}
    if path == '/v1/rerank': return {'query': 'Who met Macron?', 'documents': texts}
    return {'texts': texts}


def good_body(path: str) -> dict:
    return with_texts(path, GOOD)


def same_answer(r: httpx.Response) -> tuple:
    "What must not change between two identical requests (vLLM's answers carry a fresh id and time)."
    body = r.json()
    return r.status_code, {k: v for k, v in body.items() if k not in ('id', 'created')} if isinstance(body, dict) else body


def test_fuzz(server):
    url, sent = server.url, Counter()
    paths = routes(url)
    assert {'/v1/ner', '/v1/encode', '/v1/fill-mask', '/v1/classify', '/v1/embeddings', '/v1/score', '/v1/rerank'} <= set(paths)
    client = httpx.Client(base_url=url, timeout=TIMEOUT, headers=AUTH)
    before = {p: client.post(p, json=good_body(p)) for p in paths}
    assert any(r.status_code == 200 for r in before.values())

    def post(path, what, expect_4xx=False, **kw):
        sent[path] += 1
        status = check_answer(client.post(path, **kw), (path, what))
        if expect_4xx: assert 400 <= status < 500, (path, what, status)
        return status

    raw = {'headers': {'content-type': 'application/json'}}
    for path, schema in paths.items():
        props = schema.get('properties', {})
        # malformed and non-object JSON
        for body in [b'', b'{', b'{not json', b'[', b'null', b'1', b'"texts"', b'[]', b'{}', b'{"texts": ["a"]',
                     b'{"texts": ["a"]}}', b'\xef\xbb\xbf{"texts": ["a"]}', b'{"texts": ["a"], "texts": 1}']:
            post(path, body[:20], expect_4xx=not body.startswith(b'\xef\xbb\xbf'), content=body, **raw)   # a BOM is allowed
        post(path, 'form body', expect_4xx=True, data={'texts': 'a'})
        post(path, 'no content type', content=b'{"texts": ["a"]}')
        # wrong types at every field, and an unknown field
        for name, prop in props.items():
            for v in wrong_for(prop):
                post(path, (name, v), expect_4xx=True, json={**good_body(path), name: v})
        post(path, 'unknown field', expect_4xx=True, json={**good_body(path), 'nonsense': 1})
        # deep nesting, invalid UTF-8, lone surrogates
        for depth in (1000, 100_000):
            post(path, ('nested lists', depth), expect_4xx=True, content=b'{"texts": ' + b'[' * depth + b']' * depth + b'}', **raw)
            post(path, ('nested objects', depth), expect_4xx=True, content=b'{"texts": ' + b'{"a":' * depth + b'1' + b'}' * depth + b'}', **raw)
        for body in [b'{"texts": ["\xff\xfe"]}', b'{"texts": ["caf\xc3"]}', b'{"texts": ["\xed\xa0\x80"]}',
                     b'{"texts": ["\\ud800"]}', b'{"texts": ["ok", "a\\udfffb"]}']:
            post(path, body, expect_4xx=True, content=body, **raw)
        # every weird text alone, all together, and with a [MASK] appended (for fill-mask)
        for t in WEIRD_TEXTS:
            post(path, t[:20], json=with_texts(path, [t]))
            post(path, t[:20] + ' [MASK]', json=with_texts(path, [t + ' [MASK]']))
        post(path, 'all weird texts', json=with_texts(path, WEIRD_TEXTS))
        # sizes: a 1M-character text, thousands of texts, a body past the limit
        big = post(path, '1M characters', expect_4xx=True, json=with_texts(path, ['x' * 1_000_000]))
        assert big == 413
        assert post(path, '5000 texts', expect_4xx=True, json=with_texts(path, ['Paris'] * 5000)) == 413
        assert post(path, '60 MB body', expect_4xx=True, content=b'{"texts": ["' + b'a' * 60_000_000 + b'"]}', **raw) == 413
        # the wrong method
        sent[path] += 1
        assert check_answer(client.get(path), (path, 'GET')) == 405
    # without the key, or with a wrong one: 401 on every route but the probes, whatever the body
    with httpx.Client(base_url=url, timeout=TIMEOUT) as anonymous:
        for path, schema in paths.items():
            for headers in ({}, {'Authorization': 'Bearer ' + KEY[:-1]}, {'Authorization': KEY}):
                sent[path] += 1
                assert check_answer(anonymous.post(path, json=good_body(path), headers=headers), (path, 'no key')) == 401
        for path in ('/v1/model', '/metrics', '/openapi.json', '/no-such-route'):
            assert check_answer(anonymous.get(path), (path, 'no key')) == 401
        for path in ('/health', '/ready'): assert anonymous.get(path).status_code in (200, 503)
    # unknown paths and methods, huge headers
    for method, path in [('GET', '/'), ('GET', '/v2/ner'), ('POST', '/v1/model'), ('DELETE', '/v1/ner'), ('PUT', '/health'),
                         ('PATCH', '/v1/encode'), ('GET', '/v1/ner/../../etc/passwd'), ('GET', '/' + 'a' * 5000)]:
        assert 400 <= check_answer(client.request(method, path), (method, path)) < 500
    for size, want in ((20_000, {200, 400}), (1_000_000, {400})):     # h11 reads headers up to its limit, then refuses
        with httpx.Client(base_url=url, timeout=TIMEOUT) as fresh:
            assert check_answer(fresh.get('/health', headers={'x-big': 'a' * size}), ('header', size)) in want
    client.close()

    # seeded random bytes, concurrently: as HTTP bodies, and as raw bytes on a socket
    rng = random.Random(SEED)
    bodies = [rng.randbytes(rng.randrange(0, 4096)) for _ in range(120)]
    post_paths = sorted(paths)

    shared = httpx.Client(base_url=url, timeout=TIMEOUT, headers=AUTH)             # thread-safe; one client, 8 connections

    def send_body(i):
        return check_answer(shared.post(post_paths[i % len(post_paths)], content=bodies[i], **raw), ('random body', i))

    def send_raw(i):
        data = rng_bytes[i]
        with socket.create_connection(('127.0.0.1', int(url.rsplit(':', 1)[1])), timeout=TIMEOUT) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            answer = b''
            while chunk := s.recv(65536): answer += chunk
        if answer:
            status = int(answer.split(b' ', 2)[1])
            STATS[status] += 1
            assert 400 <= status < 500, answer[:200]
            assert json.loads(answer.split(b'\r\n\r\n', 1)[1])['detail']
        else: STATS['closed'] += 1
        return answer

    rng_bytes = [rng.randbytes(rng.randrange(1, 2048)) for _ in range(40)] + \
                [b'GET / HTTP/1.1\r\nHost: x\r\n' + rng.randbytes(200) + b'\r\n\r\n' for _ in range(10)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send_body, range(len(bodies)))) + [r[:12] for r in pool.map(send_raw, range(len(rng_bytes)))]
    shared.close()
    assert all(s == 422 or s == 400 for s in statuses[:len(bodies)]), Counter(statuses[:len(bodies)])

    # the same good request, the same answer; still healthy
    with httpx.Client(base_url=url, timeout=TIMEOUT, headers=AUTH) as c:
        for p in paths:
            assert same_answer(c.post(p, json=good_body(p))) == same_answer(before[p]), p
        assert c.get('/health').json() == {'status': 'ok'}
    print(f"\nfuzz {server.folder.name}: {sum(STATS.values()) + 2 * len(paths)} requests; statuses {dict(sorted(STATS.items(), key=str))}")
    STATS.clear()
    rc, err = server.stop()
    assert rc == 0 and 'Traceback' not in err, err[-2000:]
