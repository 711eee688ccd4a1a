"""The package's architecture rules, checked on its source: reading order is import order (a module imports only
modules of earlier chapters, at the top or inside a function), and the front door `import bert_book as bb` gives the
names a user starts from, with `bb.load(folder)` answering one text or many."""
import ast, json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'bert_book'


def chapter_of_module() -> dict[str, str]:
    "Each module's chapter: the notebook (by file name, which is reading order) whose `default_exp` writes it."
    chapters = {}
    for nb in sorted((ROOT / 'nbs').glob('[0-9]*.ipynb')):
        for cell in json.loads(nb.read_text(encoding='utf-8'))['cells']:
            for name in re.findall(r'^#\|\s*default_exp\s+([\w.]+)', ''.join(cell['source']), re.M):
                assert name not in chapters, f'{name} is written by {chapters[name]} and {nb.stem}'
                chapters[name] = nb.stem
    return chapters


def package_imports(path: Path) -> list[tuple[str, int]]:
    "(module of this package, line) for every import in a module's source, at any depth."
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.ImportFrom):
            if node.level:    # from .x import y / from . import x
                names = [node.module.split('.')[0]] if node.module else [a.name for a in node.names]
            elif node.module == 'bert_book': names = [a.name for a in node.names]
            elif (node.module or '').startswith('bert_book.'): names = [node.module.split('.')[1]]
            else: names = []
        elif isinstance(node, ast.Import):
            names = [a.name.split('.')[1] for a in node.names if a.name.startswith('bert_book.')]
        else: names = []
        found += [(n, node.lineno) for n in names]
    return found


def test_every_module_has_a_chapter():
    chapters = chapter_of_module()
    modules = {p.stem for p in PACKAGE.glob('*.py') if not p.stem.startswith('_')}
    assert modules == set(chapters), f'modules without a chapter: {modules - set(chapters)}'


def test_reading_order_is_import_order():
    chapters = chapter_of_module()
    forward = [f'{p.stem} ({chapters[p.stem]}) imports {name} ({chapters[name]}) at line {line}'
               for p in sorted(PACKAGE.glob('*.py')) if p.stem in chapters
               for name, line in package_imports(p) if name in chapters and chapters[name] > chapters[p.stem]]
    assert not forward, 'imports of later chapters:\n' + '\n'.join(forward)


def test_the_check_sees_a_forward_import(tmp_path):
    "The parser finds imports at the top, inside functions, relative and absolute."
    src = tmp_path / 'm.py'
    src.write_text('from .core import x\nimport bert_book.cli\ndef f():\n    from bert_book import serving\n'
                   '    from bert_book.ood import g\n')
    assert package_imports(src) == [('core', 1), ('cli', 2), ('serving', 4), ('ood', 5)]


def test_front_door_names():
    import bert_book as bb
    assert bb.__doc__ and 'bb.load' in bb.__doc__
    missing = [n for n in bb.__all__ if not hasattr(bb, n)]
    assert not missing
    for name in ('load', 'load_model', 'train_ner', 'train_classifier', 'pretrain_mlm', 'Engine', 'save_pretrained'):
        assert name in bb.__all__
    from bert_book.pretrained import ARCHITECTURES
    from bert_book.token_classification import DECODERS
    assert 'BertCRFForTokenClassification' in ARCHITECTURES and set(DECODERS) == {'argmax', 'constrained', 'crf'}


@pytest.fixture(scope='module')
def tagger_folder(tiny_folder):
    return tiny_folder('tagger', labels=('O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC'))


def test_load_answers_one_text_or_many(tagger_folder):
    import bert_book as bb
    engine = bb.load(tagger_folder, device='cpu')
    texts = ['Angela Merkel met Emmanuel Macron in Paris.', 'Nothing here.']
    many = engine.ner(texts)
    assert isinstance(many, list) and len(many) == 2
    assert engine.ner(texts[0]) == many[0] and engine.encode(texts[1])['tokens'] == engine.encode(texts)[1]['tokens']
    with pytest.raises(TypeError, match=r'texts\[1\] is int'): engine.ner(['ok', 3])


ONE_HOME = {'IGNORE_INDEX': 'masking', 'check_texts': 'core', 'check_positive_int': 'core', 'forward_by_length':
            'token_classification', 'truncate_ids': 'token_classification', 'encoder_of': 'encoder',
            'load_model': 'pretrained', 'weights_sha256': 'pretrained', 'make_optimizer': 'training',
            'model_precision': 'compression', 'serve': 'operations', 'load': 'engine', 'SCHEMES': 'data',
            'SCHEME_PREFIXES': 'data', 'TAG_PREFIXES': 'data', 'normalize_scheme': 'data', 'check_sentences': 'alignment',
            'encode_ner': 'alignment', 'detokenize': 'data', 'optional_import': 'core', 'pool': 'embeddings',
            'mean_pool': 'pretrained', 'encode_pairs': 'classification', 'check_pairs': 'embeddings',
            'bbc_articles': 'datasets', 'relevance': 'embeddings', 'pair_up': 'engine', 'ranked': 'engine'}


def test_each_job_is_defined_in_one_module():
    "Rule 2: each of these names is defined (def, class or top-level assignment) in its home module and nowhere else."
    defined = {}
    for path in sorted((ROOT / 'bert_book').glob('*.py')):
        if path.name.startswith('_'): continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any('patch' in ast.unparse(d) for d in node.decorator_list):
                continue                                             # a method added with fastcore's @patch
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else \
                    [t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign) else []
            for name in names: defined.setdefault(name, []).append(path.stem)
    assert {name: defined.get(name) for name in ONE_HOME} == {name: [home] for name, home in ONE_HOME.items()}


MAX_MODULE_LINES = 580   # rule 3: about 500 lines at most (training, the largest, is 563)


def test_no_module_is_a_god_module():
    "Rule 3: every module of the package (not the generated index) stays within about 500 lines."
    sizes = {p.name: len(p.read_text(encoding='utf-8').splitlines()) for p in PACKAGE.glob('*.py') if p.name != '_modidx.py'}
    assert len(sizes) > 20
    assert {n: k for n, k in sizes.items() if k > MAX_MODULE_LINES} == {}
