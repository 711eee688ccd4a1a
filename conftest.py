"""Test-wide hooks. nbval knows nothing of nbdev's cell flags, so `#| cuda` and `#| slow` cells are skipped here:
cuda cells where no GPU is present, slow cells unless RUN_SLOW=1 (or --run-slow) asks for them."""
import os, re
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

def pytest_collection_modifyitems(config, items):
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
