"""The tiny models the tests share: one tokenizer, one config, one saved folder per task (random weights, seconds to build).

Plain functions, so that module-level code and fixtures alike can use them; `conftest.py` wraps them as fixtures."""
from __future__ import annotations
from functools import lru_cache
from pathlib import Path

from bert_book.core import BertConfig, seed_everything
from bert_book.data import load_corpus
from bert_book.encoder import BertModel
from bert_book.heads import BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification
from bert_book.pretrained import save_pretrained
from bert_book.tokenizer import BertTokenizer, train_wordpiece

TAGS = ('O', 'B-LOC', 'I-LOC', 'B-ORG', 'I-ORG', 'B-PER', 'I-PER')   # a tagger's labels
SENTIMENT = ('negative', 'positive')                                  # a classifier's labels
TASKS = {'tagger': BertForTokenClassification, 'mlm': BertForMaskedLM, 'classifier': BertForSequenceClassification,
         'encoder': BertModel}
DEFAULT_LABELS = {'tagger': TAGS, 'classifier': SENTIMENT}


@lru_cache(maxsize=None)
def tiny_tokenizer(vocab_size: int = 600, model_max_length: int = 32, n_lines: int = 2000) -> BertTokenizer:
    "WordPiece trained on the first `n_lines` of the bundled corpus (cached: treat it as read-only)."
    return train_wordpiece(load_corpus()[:n_lines], vocab_size=vocab_size, model_max_length=model_max_length)


def tiny_config(vocab_size: int | None = None, *, labels=None, **kw) -> BertConfig:
    """One layer, hidden size 32, two heads, 32 positions, unless `kw` says otherwise; `vocab_size` defaults to
    `tiny_tokenizer()`'s, `labels` (a sequence of names) gives `id2label`."""
    config = dict(vocab_size=vocab_size or tiny_tokenizer().vocab_size, hidden_size=32, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    if labels is not None: config['id2label'] = dict(enumerate(labels))
    return BertConfig(**{**config, **kw})


def tiny_model(task: str, config: BertConfig | None = None, *, labels=None, seed: int = 0, **kw):
    "A `TASKS[task]` model with random weights (seeded), in eval mode."
    if task not in TASKS: raise ValueError(f"task={task!r}; choose one of {sorted(TASKS)}")
    if config is None: config = tiny_config(labels=labels or DEFAULT_LABELS.get(task), **kw)
    seed_everything(seed)
    return TASKS[task](config).eval()


def tiny_folder(root: str | Path, task: str, *, tokenizer: BertTokenizer | None = None, labels=None, seed: int = 0,
                name: str | None = None, **kw) -> Path:
    "`tiny_model(task, ...)` saved with its tokenizer as a checkpoint folder `root/name` (default: the task)."
    tokenizer = tokenizer or tiny_tokenizer()
    model = tiny_model(task, tiny_config(tokenizer.vocab_size, labels=labels or DEFAULT_LABELS.get(task), **kw),
                       seed=seed)
    return save_pretrained(model, tokenizer, Path(root) / (name or task))
