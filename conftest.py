"""Test-wide hooks. nbval knows nothing of nbdev's cell flags, so `#| cuda` and `#| slow` cells are skipped here:
cuda cells where no GPU is present, slow cells unless RUN_SLOW=1 (or --run-slow) asks for them."""
import os, re
from pathlib import Path
import pytest

FLAG = re.compile(r'^#\|\s*(.*)$')

def _cell_flags(source):
    "The nbdev directives of a cell's leading comment lines, e.g. {'slow', 'export'}."
    flags = set()
    for line in source.splitlines():
        m = FLAG.match(line.strip())
        if m: flags.update(m.group(1).split())
        elif line.strip(): break
    return flags

def _has_cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False

def pytest_addoption(parser):
    parser.addoption('--run-slow', action='store_true', default=False, help='run cells and tests marked slow')

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than 30 s on two CPU cores')
    config.addinivalue_line('markers', 'cuda: needs an NVIDIA GPU')
    if os.environ.get('PYTEST_XDIST_WORKER'):   # pytest -n N: the workers share the cores, one torch thread each
        import torch
        torch.set_num_threads(1)

# The files that take longest under test, longest first (per-file sums of `--durations=0` under `make test-suite`).
# `make test` runs the notebooks and tests/ in one `pytest -n 2 --dist loadfile --no-loadscope-reorder`: each worker takes
# the next file in this order when it is nearly done with its last, so the long ones start early and the short ones fill
# the gaps at the end, instead of one worker running a long notebook alone while the other has finished. A file not
# named keeps its place after these.
LONGEST_FIRST = ('12_compression', '11_classification', '16_cli', '09_pretrained', '13_ood', '06a_mlm', 'test_serving',
                 'test_fuzz', '08a_token_classification', '06_training', '10_real_ner', 'test_operations', '14a_service', '14c_operations', '14_engine', '02_data',
                 'test_training', '04_encoder', '15_demo', 'test_soak', 'test_crf', 'test_ner_pipeline', 'test_metrics',
                 '07_metrics', '05_heads', 'test_demo', 'test_install')

def _file_rank(item) -> int:
    stem = Path(str(item.fspath)).stem
    return LONGEST_FIRST.index(stem) if stem in LONGEST_FIRST else len(LONGEST_FIRST)

def pytest_collection_modifyitems(config, items):
    items.sort(key=_file_rank)   # stable: the cells of a notebook, and the tests of a file, keep their order
    run_slow = config.getoption('--run-slow') or os.environ.get('RUN_SLOW') == '1'
    cuda = _has_cuda()
    for item in items:
        cell = getattr(item, 'cell', None)
        if cell is not None and cell.get('execution_count') is None:
            # nbdev_clean blanks execution counts; nbval would then call a cell with outputs 'unrun'
            cell['execution_count'] = getattr(item, 'cell_num', 0) + 1
        flags = _cell_flags(cell.source) if cell is not None else {m.name for m in item.iter_markers()}
        if 'cuda' in flags and not cuda:
            item.add_marker(pytest.mark.skip(reason='needs CUDA'))
        if 'eval:' in flags and 'false' in flags:  # nbdev's `#| eval: false`: shown in the book, never run
            item.add_marker(pytest.mark.skip(reason='#| eval: false'))
        if 'slow' in flags and not run_slow:
            item.add_marker(pytest.mark.skip(reason='slow: set RUN_SLOW=1'))
