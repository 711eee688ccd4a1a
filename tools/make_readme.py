"""Write README.md from nbs/index.ipynb (what nbdev_readme does, without Quarto): markdown cells as they are,
code cells with their text outputs; nbdev directive lines and hidden cells left out."""
import json, re, sys
from pathlib import Path

def cell_source(cell) -> str:
    return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']

def render(nb: dict) -> str:
    parts = []
    for cell in nb['cells']:
        src = cell_source(cell)
        if cell['cell_type'] == 'markdown':
            parts.append(src.strip())
        elif cell['cell_type'] == 'code':
            if re.search(r'^#\|\s*hide', src, re.M): continue
            code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
            if code: parts.append(f'```python\n{code}\n```')
            text = ''.join(''.join(o.get('text', '')) for o in cell.get('outputs', []) if o.get('output_type') == 'stream')
            if text.strip(): parts.append('    ' + text.strip().replace('\n', '\n    '))
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    root = Path(__file__).resolve().parents[1]
    out = render(json.loads((root / 'nbs' / 'index.ipynb').read_text(encoding='utf-8')))
    target = root / 'README.md'
    if '--check' in sys.argv:
        if target.read_text(encoding='utf-8') != out: sys.exit('README.md is out of date: run `make readme`')
        print('README.md in sync with nbs/index.ipynb')
    else:
        target.write_text(out, encoding='utf-8'); print('wrote README.md')
