"""Load test of `bert-book serve`: the real server in its own process on a loopback port, `--clients` closed-loop
clients (each sends its next request when the last is answered) for `--seconds`, first with micro-batching on, then
off; prints requests/s, p50/p99 latency and errors for each, and the ratio.

    python bench/load_test.py                        # 16 clients x 10 s on the book's compact tagger (random weights)
    python bench/load_test.py --quick                # 4 clients x 2 s, a smoke run
    python bench/load_test.py --model-dir my-tagger --clients 32 --seconds 30

Without --model-dir a compact tagger (4 layers, hidden 256, 128 positions) with random weights is built in a temporary
folder: throughput does not depend on what the weights learned. Loopback only; bounded by --seconds and --max-requests.
"""
from __future__ import annotations
import argparse, os, sys, tempfile
from pathlib import Path

import httpx

from bert_book.core import seed_everything
from bert_book.data import SAMPLE_LABELS, detokenize, load_corpus, load_sample
from bert_book.heads import BertForTokenClassification
from bert_book.mlm import compact_config
from bert_book.pretrained import save_pretrained
from bert_book.cli import ServeProcess
from bert_book.loadtest import load_test
from bert_book.tokenizer import train_wordpiece


def compact_tagger(folder: Path) -> Path:
    "The book's compact BERT with a tagging head (random weights) and a WordPiece tokenizer, saved in `folder`."
    tok = train_wordpiece(load_corpus()[:5000], vocab_size=8000, model_max_length=128)
    seed_everything(0)
    model = BertForTokenClassification(compact_config(tok.vocab_size, id2label=dict(enumerate(SAMPLE_LABELS)))).eval()
    return save_pretrained(model, tok, folder)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model-dir', type=Path, default=None, help='a tagger folder; default: a compact random-weight tagger')
    p.add_argument('--clients', type=int, default=16, help='concurrent closed-loop clients (default: %(default)s)')
    p.add_argument('--seconds', type=float, default=10.0, help='seconds of load per setting (default: %(default)s)')
    p.add_argument('--max-requests', type=int, default=200_000, help='stop a setting after this many requests (default: %(default)s)')
    p.add_argument('--texts-per-request', type=int, default=1, help='sentences per request (default: %(default)s)')
    p.add_argument('--endpoint', default='/v1/ner', choices=('/v1/ner', '/v1/encode'), help='(default: %(default)s)')
    p.add_argument('--max-batch-size', type=int, default=32, help="the server's --max-batch-size (default: %(default)s)")
    p.add_argument('--batch-wait-ms', type=float, default=5.0, help="the server's --batch-wait-ms (default: %(default)s)")
    p.add_argument('--device', default='cpu', help="the server's device (default: %(default)s)")
    p.add_argument('--threads', type=int, default=max(1, len(os.sched_getaffinity(0)) - 1),
                   help="the server's torch threads; the clients need a core too (default: the CPUs less one, %(default)s)")
    p.add_argument('--quick', action='store_true', help='a smoke run: 4 clients for 2 s')
    args = p.parse_args(argv)
    if args.quick: args.clients, args.seconds = min(args.clients, 4), min(args.seconds, 2.0)
    if args.clients < 1 or args.seconds <= 0 or args.max_requests < 1 or args.texts_per_request < 1 or args.threads < 1:
        p.error('--clients, --seconds, --max-requests, --texts-per-request and --threads must be positive')

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or compact_tagger(Path(tmp) / 'compact-tagger')
        sentences = [detokenize(s.tokens) for s in load_sample('test')]
        k = args.texts_per_request
        payloads = [{'texts': sentences[i:i + k]} for i in range(0, len(sentences) - k + 1, k)]
        print(f"model {model_dir if args.model_dir else 'compact tagger (random weights)'}; {args.clients} clients x "
              f"{args.seconds:g} s (at most {args.max_requests} requests); {k} sentence(s) per request to {args.endpoint}; "
              f"server threads {args.threads}", flush=True)
        rows = {}
        for batching in (True, False):
            proc = ServeProcess(model_dir, '--max-batch-size', args.max_batch_size, '--batch-wait-ms', args.batch_wait_ms,
                                *([] if batching else ['--no-batching']), env={**os.environ, 'BERT_BOOK_DEVICE': args.device},
                                timeout=120, threads=args.threads).start()
            url = proc.url
            try:
                load_test(url, payloads, clients=2, seconds=None, max_requests=20, endpoint=args.endpoint)   # warm-up
                rows[batching] = load_test(url, payloads, clients=args.clients, seconds=args.seconds,
                                           endpoint=args.endpoint, max_requests=args.max_requests)
            finally:
                rc, _ = proc.stop()
            if rc != 0: print(f"warning: the server exited with status {rc}", file=sys.stderr)

    print(f"\n{'micro-batching':15} {'clients':>7} {'requests':>9} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for batching, r in rows.items():
        print(f"{'on' if batching else 'off':15} {r['clients']:7} {r['requests']:9} {r['rps']:11.1f} {r['p50_ms']:8.1f} "
              f"{r['p99_ms']:8.1f} {r['errors']:7}")
    ratio = rows[True]['rps'] / rows[False]['rps'] if rows[False]['rps'] else float('nan')
    print(f"micro-batching on / off: {ratio:.2f}x the requests per second")
    return 1 if any(r['errors'] or not r['requests'] for r in rows.values()) else 0


if __name__ == '__main__':
    sys.exit(main())
