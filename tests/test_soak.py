"""A soak: concurrent closed-loop clients against a real, micro-batched `bert-book serve` subprocess (loopback, one torch
thread), bounded by a request count; then SIGTERM. Zero errors, every request answered 200, a clean exit, and the
server's resident memory (VmRSS, sampled after every round) grows by no more than RSS_BOUND_MIB between the first
and the last quarter of the run. The short soak runs in the normal suite; the long one (`slow`) with RUN_SLOW=1."""
import importlib
import os
from pathlib import Path

import pytest

httpx = importlib.import_module('httpx')
importlib.import_module('fastapi')

from bert_book.cli import ServeProcess
from bert_book.data import detokenize, load_sample
from bert_book.loadtest import load_test


KEY = 'soak-key-42'        # the server runs with an API key, as an operator runs it
ENV = {**os.environ, 'BERT_BOOK_DEVICE': 'cpu', 'OMP_NUM_THREADS': '1', 'BERT_BOOK_API_KEY': KEY}
AUTH = {'Authorization': f'Bearer {KEY}'}
RSS_BOUND_MIB = 16          # allowed growth of the mean RSS, last quarter vs first quarter


def rss_mib(pid: int) -> float:
    "The resident set size of process `pid` in MiB (Linux /proc)."
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024
    raise RuntimeError(f'no VmRSS for process {pid}')


def batches_of_sentences(body) -> list[dict]:
    "Request bodies of 1 to 4 of the sample's sentences each, made by `body(texts)`."
    sentences = [detokenize(s.tokens) for s in load_sample('dev')]
    return [body([sentences[(i + j) % len(sentences)] for j in range(1 + i % 4)]) for i in range(0, 400, 3)]


TAGGER_ROUTES = {'/v1/ner': batches_of_sentences(lambda t: {'texts': t}),
                 '/v1/encode': batches_of_sentences(lambda t: {'texts': t})}
ENCODER_ROUTES = {'/v1/embeddings': batches_of_sentences(lambda t: {'input': t}),
                  '/v1/rerank': batches_of_sentences(lambda t: {'query': 'Where did they meet?', 'documents': t})}


def soak(folder, rounds: int, per_round: int, clients: int, routes: dict = TAGGER_ROUTES) -> dict:
    "`rounds` x `per_round` requests (the `routes` in turn, 1 to 4 sentences each) from `clients` clients."
    payloads = next(iter(routes.values()))
    proc = ServeProcess(folder, '--max-batch-size', 16, '--batch-wait-ms', 2, env=ENV, threads=1).start()
    try:
        load_test(proc.url, payloads, clients=clients, seconds=None, max_requests=4 * clients, headers=AUTH)     # warm-up
        rss, runs = [], []
        for k in range(rounds):
            endpoint = list(routes)[k % len(routes)]
            runs.append(load_test(proc.url, routes[endpoint], clients=clients, seconds=None, max_requests=per_round,
                                  endpoint=endpoint, headers=AUTH))
            rss.append(rss_mib(proc.pid))
        micro = httpx.get(f'{proc.url}/v1/model', timeout=60, headers=AUTH).json()['micro_batching']
    finally:
        rc, err = proc.stop()
    q = max(1, rounds // 4)
    first, last = sum(rss[:q]) / q, sum(rss[-q:]) / q
    out = {'requests': sum(r['requests'] for r in runs), 'errors': sum(r['errors'] for r in runs),
           'statuses': {s: sum(r['statuses'].get(s, 0) for r in runs) for s in {s for r in runs for s in r['statuses']}},
           'seconds': sum(r['seconds'] for r in runs), 'rss_first_mib': first, 'rss_last_mib': last, 'rss': rss,
           'batches': micro['batches'], 'rc': rc, 'stderr': err}
    print(f"\nsoak: {out['requests']} requests in {out['seconds']:.1f} s ({clients} clients, {out['batches']} model calls), "
          f"{out['errors']} errors, statuses {out['statuses']}; server RSS first quarter {first:.1f} MiB, "
          f"last quarter {last:.1f} MiB ({last - first:+.1f}); exit status {rc}")
    return out


def check(out: dict, rounds: int, per_round: int):
    assert out['rc'] == 0 and 'Traceback' not in out['stderr'], out['stderr'][-2000:]
    assert out['errors'] == 0 and out['requests'] == rounds * per_round and out['statuses'] == {200: rounds * per_round}
    assert out['rss_last_mib'] - out['rss_first_mib'] <= RSS_BOUND_MIB, out['rss']


def test_soak_short(tiny_folders):
    rounds, per_round = 8, 60
    check(soak(tiny_folders['tagger'], rounds, per_round, clients=8), rounds, per_round)


def test_soak_pooling_routes(tiny_folder):
    "OpenAI's /v1/embeddings and vLLM's /v1/rerank on an encoder, soaked as the tagger's routes are."
    rounds, per_round = 8, 60
    check(soak(tiny_folder('encoder'), rounds, per_round, clients=8, routes=ENCODER_ROUTES), rounds, per_round)


@pytest.mark.slow
def test_soak_long(tiny_folders):
    rounds, per_round = 16, 1000
    check(soak(tiny_folders['tagger'], rounds, per_round, clients=16), rounds, per_round)
