"""Fixtures shared by the test files: the tiny tokenizer, config and model folders of `tiny.py`."""
import pytest

import tiny


@pytest.fixture(scope='session')
def tiny_tokenizer():
    "The shared tiny WordPiece tokenizer (read-only)."
    return tiny.tiny_tokenizer()


@pytest.fixture(scope='session')
def tiny_config():
    "The config builder: `tiny_config(vocab_size=None, labels=None, **fields)`."
    return tiny.tiny_config


@pytest.fixture(scope='session')
def tiny_folder(tmp_path_factory):
    "`tiny_folder(task, **options)`: a saved random-weight model folder, built once per task and options."
    root, made = tmp_path_factory.mktemp('tiny-folders'), {}
    def folder(task: str, **options):
        key = (task, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key not in made: made[key] = tiny.tiny_folder(root, task, name=task if not options else f'{task}-{len(made)}',
                                                         **options)
        return made[key]
    return folder


@pytest.fixture(scope='session')
def tiny_folders(tiny_folder):
    "A one-layer tagger, masked language model and sentence classifier: {'tagger', 'mlm', 'classifier'} -> folder."
    return {task: tiny_folder(task) for task in ('tagger', 'mlm', 'classifier')}
