"""The package as users get it: a wheel built from this tree, installed into an empty folder, imports from another
folder (not from the source tree) and carries its sample data."""
import configparser, json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('install')
    wheels, target = tmp / 'wheels', tmp / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', wheels, ROOT],
                   check=True, capture_output=True)
    wheel, = wheels.glob('bert_book-*.whl')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', target, wheel],
                   check=True, capture_output=True)
    return tmp, target


def test_imports_from_the_installed_copy_with_its_data(installed):
    tmp, target = installed
    code = ('import json, bert_book, bert_book.tokenizer, bert_book.data as d;'
            'print(json.dumps({"file": bert_book.__file__, "train": len(d.load_sample("train")),'
            '"corpus": len(d.load_corpus()), "version": bert_book.__version__}))')
    env = {**os.environ, 'PYTHONPATH': str(target)}
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp, env=env, capture_output=True, text=True, check=True)
    info = json.loads(r.stdout)
    assert Path(info['file']).resolve().is_relative_to(target.resolve())     # not the source tree, not the editable install
    assert info['train'] == 2000 and info['corpus'] == 8000 and info['version']


def test_wheel_holds_every_module_and_the_console_script(installed):
    _, target = installed
    modules = {p.stem for p in (target / 'bert_book').glob('*.py')}
    assert modules >= {p.stem for p in (ROOT / 'bert_book').glob('*.py')}
    entry_points = (next(target.glob('bert_book-*.dist-info')) / 'entry_points.txt').read_text()
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    scripts = cfg['DEFAULT'].get('console_scripts', '').split()
    assert 'bert-book=bert_book.cli:main' in scripts
    for script in scripts:
        name, target_ = script.split('=')
        assert f'{name} = {target_}' in entry_points
