"""BERT built chapter by chapter, and the package the book writes. The front door:

    import bert_book as bb
    tagger = bb.load('demo_output/ner')       # the engine for whatever a folder holds (what `make demo` saved)
    tagger.ner('Angela Merkel met Emmanuel Macron in Paris.')

`bb.load(folder)` answers `.ner`, `.classify`, `.fill_mask` and `.encode`, and for an embedding model `.embed`,
`.score` and `.rerank` (one str gives one result, a list a list);
`bb.train_ner`, `bb.train_classifier`, `bb.train_embedder`, `bb.pretrain_mlm` and `bb.pretrain_electra` fine-tune and
pre-train (each returns `bb.Trained(model, history)`); `bb.load_model`,
`bb.from_pretrained` and `bb.save_pretrained` move checkpoint folders (transformers' layout) in and out;
`bb.export_onnx` writes a folder that `bb.load` serves through onnxruntime; `bb.LLM` is vLLM's offline pooling API
on the engine. Each module is one chapter of the book, and imports only the chapters before it: core, tokenizer,
data, datasets, synthetic, masking, encoder, heads, training, mlm, metrics, alignment, token_classification,
pretrained, subwords, family, electra, modernbert, crf, classification, embeddings, compression, ood, engine, service, loadtest, operations, runtimes, vllm,
demo, cli."""
__version__ = "0.1.0"
# nbdev_export rewrites only the version line; the rest of this file, the front door, is written by hand.

from .core import BertConfig, get_device, seed_everything
from .tokenizer import BertTokenizer, train_wordpiece
from .data import TaggedSentence, read_conll
from .datasets import LabelledText, read_labelled_texts
from .heads import BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification
from .training import Trained, Trainer, TrainingConfig
from .mlm import pretrain_mlm
from .token_classification import NERPipeline, evaluate_ner, train_ner
from .pretrained import from_pretrained, load_model, save_pretrained
from .subwords import SubwordTokenizer, train_bpe, train_unigram   # BPE and Unigram tokenizer.json folders
from . import family   # registers RoBERTa, XLM-R, DistilBERT and ELECTRA folders with load_model and save_pretrained
from .electra import ElectraForPreTraining, pretrain_electra   # replaced-token detection
from . import modernbert   # registers ModernBERT folders with load_model and save_pretrained
from .crf import BertCRFForTokenClassification
from .classification import evaluate_classifier, new_classifier, train_classifier
from .embeddings import Pooling, embed, save_embedder, train_embedder
from .engine import Engine, load
from .operations import serve
from .runtimes import export_onnx
from .vllm import LLM

__all__ = ['load', 'Engine', 'serve', 'export_onnx', 'LLM', 'embed', 'train_embedder', 'save_embedder', 'Pooling', 'load_model', 'from_pretrained', 'save_pretrained', 'train_ner', 'evaluate_ner',
           'NERPipeline', 'train_classifier', 'evaluate_classifier', 'new_classifier', 'pretrain_mlm', 'pretrain_electra', 'ElectraForPreTraining', 'Trained', 'Trainer',
           'TrainingConfig', 'BertConfig', 'BertTokenizer', 'train_wordpiece', 'SubwordTokenizer', 'train_bpe', 'train_unigram', 'BertForMaskedLM',
           'BertForTokenClassification', 'BertForSequenceClassification', 'BertCRFForTokenClassification',
           'TaggedSentence', 'read_conll', 'LabelledText', 'read_labelled_texts', 'get_device', 'seed_everything']
