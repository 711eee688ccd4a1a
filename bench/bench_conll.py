"""Time `bert_book.data.read_conll` on a 100,000-sentence synthetic CoNLL file (best of 3).

    python bench/bench_conll.py [--sentences 100000] [--repeats 3]
"""
import argparse, tempfile, time
from pathlib import Path

from bert_book.synthetic import synthetic_ner
from bert_book.data import read_conll, write_conll


def best_of(fn, repeats: int) -> float:
    "The shortest wall time of `repeats` calls of `fn`."
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sentences', type=int, default=100_000)
    ap.add_argument('--repeats', type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'synthetic.conll'
        t0 = time.perf_counter()
        sents = synthetic_ner(args.sentences, seed=0)
        t1 = time.perf_counter()
        write_conll(sents, path)
        t2 = time.perf_counter()
        n_tokens = sum(len(s) for s in sents)
        print(f'file: {args.sentences} sentences, {n_tokens} tokens, {path.stat().st_size / 1e6:.1f} MB '
              f'(generated in {t1 - t0:.1f} s, written in {t2 - t1:.1f} s)')
        back = read_conll(path)
        assert back == sents, 'read_conll did not give back what write_conll wrote'
        for label, kw in [('read_conll', {}), ("read_conll(scheme='IOB2')", dict(scheme='IOB2')),
                          ("read_conll(scheme='IOB2', strict=True)", dict(scheme='IOB2', strict=True))]:
            t = best_of(lambda: read_conll(path, **kw), args.repeats)
            print(f'{label:40} best of {args.repeats}: {t:5.2f} s  {args.sentences / t:9,.0f} sentences/s  '
                  f'{n_tokens / t:11,.0f} tokens/s')


if __name__ == '__main__':
    main()
