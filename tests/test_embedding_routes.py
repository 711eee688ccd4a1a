"""OpenAI's `/v1/embeddings` and vLLM's `/v1/score` and `/v1/rerank` over real HTTP: the official `openai` client
against the service, base64 and float encodings, usage counts, errors in OpenAI's shape, the limits, micro-batching
of concurrent requests; and vLLM's offline named-entity example running on `bert_book.vllm.LLM`."""
import asyncio
import base64
import importlib
from argparse import Namespace

import numpy as np
import pytest
import torch

httpx = importlib.import_module('httpx')
importlib.import_module('fastapi')

import bert_book as bb
from bert_book.service import BackgroundServer, Limits, create_app
from bert_book.vllm import LLM, EmbeddingRequestOutput, PoolingRequestOutput, ScoringRequestOutput

DOCS = ['The central bank raised interest rates.', 'The striker scored twice.', 'A phone with a folding screen.']


@pytest.fixture(scope='module')
def embedder(tiny_folder):
    return bb.load(tiny_folder('encoder'), device='cpu')


@pytest.fixture(scope='module')
def server(embedder):
    with BackgroundServer(create_app(embedder, Limits(max_texts=8, max_chars=200))) as url:
        yield url


def test_the_openai_client_gets_the_engines_vectors(server, embedder):
    openai = pytest.importorskip('openai')
    client = openai.OpenAI(base_url=server + '/v1', api_key='unused', max_retries=0)
    want = embedder.embed(DOCS).numpy()
    got = client.embeddings.create(model=embedder.source, input=DOCS)                 # the client asks for base64
    assert np.allclose(np.array([d.embedding for d in got.data]), want, atol=1e-7)
    assert [d.index for d in got.data] == [0, 1, 2] and got.model == embedder.source
    assert got.usage.prompt_tokens == sum(embedder.count_tokens(DOCS)) == got.usage.total_tokens > len(DOCS)
    one = client.embeddings.create(model=embedder.source, input=DOCS[1], encoding_format='float')
    assert np.allclose(one.data[0].embedding, want[1], atol=1e-6)
    assert [m.id for m in client.models.list().data] == [embedder.source]
    with pytest.raises(openai.BadRequestError, match='at least one text'): client.embeddings.create(model=embedder.source, input=[])
    with pytest.raises(openai.NotFoundError, match='does not exist'): client.embeddings.create(model='gpt-4', input='x')
    with pytest.raises(openai.BadRequestError, match='dimensions'):
        client.embeddings.create(model=embedder.source, input='x', dimensions=7)


def test_embeddings_over_http(server, embedder):
    with httpx.Client(base_url=server) as c:
        r = c.post('/v1/embeddings', json={'input': DOCS[0], 'encoding_format': 'base64'})
        vec = np.frombuffer(base64.b64decode(r.json()['data'][0]['embedding']), dtype='<f4')
        assert r.status_code == 200 and np.allclose(vec, embedder.embed(DOCS[0]).numpy(), atol=1e-7)
        errors = {'token ids': {'input': [1, 2]}, 'unknown field': {'input': 'x', 'temperature': 1},
                  'bad format': {'input': 'x', 'encoding_format': 'int8'}, 'no input': {}}
        for what, body in errors.items():
            r = c.post('/v1/embeddings', json=body)
            e = r.json()['error']
            assert r.status_code == 400 and e['type'] == 'invalid_request_error' and e['message'], (what, r.text)
        r = c.post('/v1/embeddings', json={'input': ['x'] * 9})
        assert r.status_code == 413 and 'limit of 8' in r.json()['error']['message']
        r = c.post('/v1/embeddings', json={'input': ['x' * 201]})
        assert r.status_code == 413 and r.json()['error']['message'].startswith('input[0] has 201 characters')
        info = c.get('/v1/model').json()
        assert info['task'] == 'encoder' and info['methods'] == ['embed', 'score', 'rerank']
        assert info['pooling'] == {'mode': 'mean', 'normalize': True, 'max_length': None, 'source': 'default'}
        assert c.post('/v1/ner', json={'texts': ['Paris']}).status_code == 404


def test_score_and_rerank_over_http(server, embedder):
    with httpx.Client(base_url=server) as c:
        r = c.post('/v1/score', json={'text_1': 'Which bank?', 'text_2': DOCS})
        body = r.json()
        assert r.status_code == 200 and body['object'] == 'list' and body['id'].startswith('score-')
        assert [d['score'] for d in body['data']] == pytest.approx(embedder.score('Which bank?', DOCS), abs=1e-6)
        assert [d['index'] for d in body['data']] == [0, 1, 2] and body['usage']['prompt_tokens'] > 0
        pairwise = c.post('/v1/score', json={'text_1': DOCS, 'text_2': DOCS}).json()
        assert [d['score'] for d in pairwise['data']] == pytest.approx([1.0] * 3, abs=1e-5)
        r = c.post('/v1/score', json={'text_1': DOCS[:2], 'text_2': DOCS})
        assert r.status_code == 400 and 'as many as text_2' in r.json()['error']['message']
        r = c.post('/v1/score', json={'text_1': 'q' * 201, 'text_2': DOCS})
        assert r.status_code == 413 and 'text_1[0]' in r.json()['error']['message']
        r = c.post('/v1/rerank', json={'query': 'Which bank?', 'documents': DOCS, 'top_n': 2})
        body = r.json()
        want = embedder.rerank('Which bank?', DOCS, top_n=2)
        assert [x['index'] for x in body['results']] == [x['index'] for x in want]
        assert body['results'][0]['document'] == {'text': DOCS[want[0]['index']]}
        bare = c.post('/v1/rerank', json={'query': 'q', 'documents': DOCS, 'return_documents': False}).json()
        assert len(bare['results']) == 3 and 'document' not in bare['results'][0]
        for bad in ({'query': 'q', 'documents': []}, {'query': 'q', 'documents': DOCS, 'top_n': -1}, {'documents': DOCS}):
            r = c.post('/v1/rerank', json=bad)
            assert r.status_code == 400 and r.json()['error']['message'], bad


def test_concurrent_embedding_requests_share_model_calls(embedder):
    app = create_app(embedder, Limits(batch_wait_ms=50))
    async def many():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url='http://test') as c:
                rs = await asyncio.gather(*[c.post('/v1/embeddings', json={'input': [f'text {i}']}) for i in range(12)],
                                          *[c.post('/v1/rerank', json={'query': 'q', 'documents': DOCS}) for _ in range(4)])
        return rs
    rs = asyncio.run(many())
    assert all(r.status_code == 200 for r in rs)
    for i, r in enumerate(rs[:12]):
        assert np.allclose(r.json()['data'][0]['embedding'], embedder.embed(f'text {i}').numpy(), atol=1e-6)
    stats = app.state.batcher.stats
    assert stats['requests'] == 16 and stats['batches'] < 16


def test_a_tagger_answers_the_pooling_routes_404(tiny_folders):
    with BackgroundServer(create_app(bb.load(tiny_folders['tagger'], device='cpu'))) as url:
        r = httpx.post(url + '/v1/embeddings', json={'input': 'Paris'})
        assert r.status_code == 404 and 'not embed' in r.json()['error']['message']
        assert httpx.post(url + '/v1/rerank', json={'query': 'q', 'documents': ['d']}).status_code == 404


def test_vllms_ner_example_runs_with_its_import_changed(tiny_folders, capsys):
    """examples/pooling/token_classify/ner.py of vLLM, its `main` as vLLM ships it (`from vllm import LLM` replaced)."""
    def main(args: Namespace):
        prompts = ["Barack Obama visited Microsoft headquarters in Seattle on January 2025."]
        llm = LLM(**vars(args))
        tokenizer = llm.get_tokenizer()
        label_map = llm.llm_engine.vllm_config.model_config.hf_config.id2label
        outputs = llm.encode(prompts, pooling_task="token_classify")
        for prompt, output in zip(prompts, outputs):
            logits = output.outputs.data
            predictions = logits.argmax(dim=-1)
            tokens = tokenizer.convert_ids_to_tokens(output.prompt_token_ids)
            labels = [label_map[p.item()] for p in predictions]
            for token, label in zip(tokens, labels):
                if token not in tokenizer.all_special_tokens:
                    print(f"{token:15} → {label}")
    main(Namespace(model=str(tiny_folders['tagger']), runner="pooling", enforce_eager=True, trust_remote_code=True))
    lines = capsys.readouterr().out.splitlines()
    engine = bb.load(tiny_folders['tagger'], device='cpu')
    r = engine.encode("Barack Obama visited Microsoft headquarters in Seattle on January 2025.")
    labels = [engine.id2label[int(i)] for i in r['logits'].argmax(-1)]
    assert lines == [f"{t:15} → {l}" for t, l in zip(r['tokens'], labels) if t not in engine.tokenizer.all_special_tokens]


def test_vllm_pooling_calls(tiny_folder, tiny_folders):
    llm = LLM(tiny_folder('encoder'), task='embed')
    [e] = llm.embed('Paris')
    assert isinstance(e, EmbeddingRequestOutput) and isinstance(e, PoolingRequestOutput) and e.outputs.hidden_size == 32
    assert torch.allclose(torch.tensor(e.outputs.embedding), llm.engine.embed('Paris'), atol=1e-6)
    scores = llm.score('Paris', ['Paris', 'Rome'])
    assert isinstance(scores[0], ScoringRequestOutput) and scores[0].outputs.score == pytest.approx(1.0, abs=1e-5)
    cls = LLM(tiny_folders['classifier'])
    [c] = cls.classify('a fine film')
    assert c.outputs.num_classes == 2 and sum(c.outputs.probs) == pytest.approx(1.0, abs=1e-6)
    assert cls.encode('a fine film')[0].outputs.data.tolist() == pytest.approx(c.outputs.probs, abs=1e-6)
    with pytest.raises(ValueError, match='task='): LLM(tiny_folders['classifier'], task='generate')
