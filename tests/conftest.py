"""Fixtures shared by the service's test files."""
import pytest


@pytest.fixture(scope='session')
def tiny_folders(tmp_path_factory):
    "A one-layer tagger and masked language model with random weights, saved as model folders {'tagger', 'mlm'}."
    from test_fuzz import tiny_folders as build
    return build(tmp_path_factory.mktemp('tiny-models'))
