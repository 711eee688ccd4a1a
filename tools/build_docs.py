"""Build the documentation site from the notebooks: nbs/ -> _docs/ with Sphinx and myst-nb (no Quarto, nothing executed).

1. Copy nbs/index.ipynb (the landing page) and every nbs/[0-9]*.ipynb (the chapters, in filename order) into
   build/docs/src, applying nbdev's directives the way `nbdev_docs` would: `#| hide` cells are left out,
   `#| echo: false` / `#| output: false` hide the input / output, `#|` and `# NBVAL_*` lines are stripped from the code
   shown, and `backticked` names of bert_book's API become links to the reference. nbs/ itself is never modified.
2. Add the navigation (every chapter, then the API reference) to the landing page, and write one API page per public
   module of bert_book (autodoc), so new chapters and modules appear without editing anything here.
3. Run sphinx-build with `-W --keep-going -n`: any warning (a broken link, a missing image, a notebook that does
   not render, an API name that does not resolve) fails the build.

MathJax is served by the site itself (npm's mathjax package, fetched once into build/docs), so the pages work offline.

Usage: python tools/build_docs.py [--nbs nbs] [--out _docs] [--no-mathjax]
"""
from __future__ import annotations
import argparse, json, os, re, shutil, subprocess, sys, time
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS_CONF = ROOT / 'docs'
BUILD = ROOT / 'build' / 'docs'
SRC = BUILD / 'src'
sys.path.insert(0, str(DOCS_CONF / '_ext'))

MATHJAX_VERSION = '3.2.2'
ASSET_SUFFIXES = {'.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp', '.pdf', '.csv', '.txt', '.json'}
_DIRECTIVE = re.compile(r'^\s*#\s?\|\s?(.*?)\s*$')
_NBVAL = re.compile(r'^\s*#\s*NBVAL_\w+\s*$')
_HIDE_LINE = re.compile(r'#\|\s*hide_line\s*$')
_DEFAULT_EXP = re.compile(r'^\s*#\|\s*default_exp\s+(\S+)', re.M)
_FENCE = re.compile(r'^\s*(```|~~~)')
_BACKTICKS = re.compile(r'(?<![`\w}])`([^`\n]+)`(?![`\w])')  # not a {role}`...`'s content
_TITLE = re.compile(r'^#\s+\S', re.M)
ORIGINS: dict[str, tuple[Path, list[int | None]]] = {}  # processed notebook name -> (its source, each cell's index there)


def settings() -> dict:
    "The [DEFAULT] section of settings.ini, the single source of truth for both nbdev_docs and this site."
    ini = ConfigParser(delimiters=['='])
    if not ini.read(ROOT / 'settings.ini', encoding='utf-8'): raise FileNotFoundError(f'no settings.ini in {ROOT}')
    return dict(ini['DEFAULT'])


def source_of(cell: dict) -> str:
    "A cell's source as one string (notebooks store either a string or a list of lines)."
    src = cell.get('source', '')
    return ''.join(src) if isinstance(src, list) else src


def split_directives(source: str) -> tuple[dict[str, str], list[str]]:
    "nbdev's directives (the leading `#|` lines: {'hide': '', 'eval:': 'false'}) and the lines of the rest."
    lines, directives, i = source.splitlines(), {}, 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if m:
            key, _, value = m.group(1).partition(' ')
            if key: directives[key.rstrip(':')] = value.strip()
        elif lines[i].strip(): break
        i += 1
    return directives, lines[i:]


def linkify(markdown: str, module: str | None) -> str:
    "Turn `name` spans that name bert_book's public API into links (as nbdev's docs do), outside fenced code."
    from bert_book_sphinx import resolve
    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if _FENCE.match(line): fenced = not fenced
        if fenced or _FENCE.match(line): out.append(line); continue
        def sub(m):
            before, after = line[:m.start()], line[m.end():]
            if before.endswith('[') and after.startswith(']('): return m.group(0)  # already a link's text
            full = resolve(m.group(1), module)
            return f'{{bbobj}}`{m.group(1)} <{full}>`' if full else m.group(0)
        out.append(_BACKTICKS.sub(sub, line))
    return ''.join(out)


_PY_WARNING = re.compile(r'^\S+\.py:\d+: \w*Warning: ')

WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'

def static_outputs(outputs: list[dict]) -> list[dict]:
    """The outputs a static page can show: less the Python warnings a library wrote to stderr (`/path/x.py:21:
    SomeWarning: ...` and its code line: this machine's paths are no part of the book) and less interactive widgets
    (tqdm's notebook bars: their stored text is the bar's first state, and their JavaScript would need a CDN)."""
    kept = []
    for o in outputs:
        if WIDGET_VIEW in o.get('data', {}): continue
        if o.get('output_type') == 'stream' and o.get('name') == 'stderr':
            lines, out, skip = ''.join(o.get('text', '')).splitlines(keepends=True), [], False
            for line in lines:
                if _PY_WARNING.match(line): skip = True; continue
                if skip and line.startswith((' ', '\t')): continue  # the source line warnings print under themselves
                skip = False; out.append(line)
            if not ''.join(out).strip(): continue
            o = {**o, 'text': ''.join(out)}
        kept.append(o)
    return kept


_SHOW_DOC = re.compile(r'^show_doc\(\s*([\w.]+)', re.M)

def import_path(full: str):
    "The object a dotted name means (`bert_book.core.BertConfig.to_dict`), importing its module."
    import importlib
    parts = full.split('.')
    for i in range(len(parts), 0, -1):
        try: obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError: continue
        for name in parts[i:]: obj = getattr(obj, name)
        return obj
    raise ImportError(full)


def autodoc_directive(full: str) -> str:
    "An autodoc directive that shows one object where the chapter calls `show_doc` (the API page is its index entry)."
    import inspect
    obj = import_path(full)
    parent = import_path(full.rsplit('.', 1)[0])
    if inspect.isclass(obj): kind, opts = 'autoclass', [':no-members:']
    elif inspect.isclass(parent) and isinstance(inspect.getattr_static(parent, full.rsplit('.', 1)[1]), property): kind, opts = 'autoproperty', []
    elif inspect.isclass(parent) and callable(obj): kind, opts = 'automethod', []
    elif callable(obj): kind, opts = 'autofunction', []
    else: kind, opts = 'autodata', []
    return '\n'.join([f'.. {kind}:: {full}', '   :no-index:', *(f'   {o}' for o in opts)])


def show_doc_cell(code: str, module: str | None) -> dict | None:
    """A `show_doc(...)` cell as the site shows it: autodoc of the same objects, as on the API page. None when an
    object is not part of the documented API (then its stored output is shown, cleaned for MyST)."""
    from bert_book_sphinx import resolve
    names = _SHOW_DOC.findall(code)
    fulls = [resolve(n, module) for n in names]
    if not names or None in fulls: return None
    try: body = '\n\n'.join(autodoc_directive(f) for f in fulls)
    except (ImportError, AttributeError): return None
    return {'cell_type': 'markdown', 'metadata': {}, 'source': '```{eval-rst}\n' + body + '\n```'}


def clean_markdown_outputs(outputs: list[dict]) -> list[dict]:
    """Markdown outputs (nbdev's show_doc writes them) made valid inside a cell's output: no horizontal rule, no Quarto
    link attributes, headings as bold lines (a heading cannot live in an output)."""
    kept = []
    for o in outputs:
        md = o.get('data', {}).get('text/markdown')
        if md is not None:
            md = ''.join(md) if isinstance(md, list) else md
            md = re.sub(r'^---\s*$', '', md, flags=re.M)
            md = re.sub(r'^\[source\]\([^)]*\)\{[^}]*\}\s*$', '', md, flags=re.M)
            md = re.sub(r'^#{1,6}\s+(.+)$', r'**\1**', md, flags=re.M)
            o = {**o, 'data': {**o['data'], 'text/markdown': md.strip() + '\n'}}
        kept.append(o)
    return kept


def process_code_cell(cell: dict, module: str | None = None) -> dict | None:
    "A code cell as the site shows it, with nbdev's directives applied; None when nothing of it is shown."
    directives, lines = split_directives(source_of(cell))
    if 'hide' in directives or directives.get('include') == 'false': return None
    lines = [l for l in lines if not _NBVAL.match(l) and not _HIDE_LINE.search(l)]
    code = '\n'.join(lines).strip('\n')
    outputs = static_outputs(cell.get('outputs', []))
    tags = list(cell.get('metadata', {}).get('tags', []))
    if code.lstrip().startswith('show_doc('):
        replaced = show_doc_cell(code, module)
        if replaced is not None: return replaced
        tags.append('remove-input')
    outputs = clean_markdown_outputs(outputs)
    if directives.get('echo') == 'false': tags.append('remove-input')
    if directives.get('output') == 'false': tags.append('remove-output'); outputs = []
    if directives.get('code-fold') == 'true': tags.append('hide-input')
    if not code.strip() and not outputs: return None
    if not code.strip(): tags.append('remove-input')
    meta = {'tags': sorted(set(tags))} if tags else {}
    return {'cell_type': 'code', 'execution_count': None, 'metadata': meta, 'outputs': outputs, 'source': code}


def default_exp(nb: dict) -> str | None:
    "The module a notebook exports to (`core`), from its `#| default_exp` cell."
    for cell in nb['cells']:
        if cell['cell_type'] == 'code':
            m = _DEFAULT_EXP.search(source_of(cell))
            if m: return m.group(1)
    return None


def read_notebook(path: Path) -> dict:
    "A notebook's JSON, or a ValueError that names the file."
    try: nb = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e: raise ValueError(f'{path}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}') from None
    if not isinstance(nb, dict) or not isinstance(nb.get('cells'), list): raise ValueError(f'{path}: not a Jupyter notebook')
    return nb


def process_notebook(path: Path, lib: str, extra_cells: list[dict] = ()) -> tuple[dict, str | None]:
    "The notebook as the site shows it, and the module it writes (or None)."
    nb = read_notebook(path)
    exp = default_exp(nb)
    module = f'{lib}.{exp}' if exp else None
    cells = []
    for index, cell in enumerate(nb['cells']):
        if cell['cell_type'] == 'code':
            c = process_code_cell(cell, module)
        elif cell['cell_type'] == 'markdown':
            src = source_of(cell)
            c = {'cell_type': 'markdown', 'metadata': {}, 'source': linkify(src, module)} if src.strip() else None
            if c is not None and cell.get('attachments'): c['attachments'] = cell['attachments']
        else:
            c = None  # raw cells are for other converters
        if c is not None: c['_origin'] = index; cells.append(c)
    if not any(c['cell_type'] == 'markdown' and _TITLE.search(c['source']) for c in cells):
        raise ValueError(f'{path}: no title: a chapter starts with a markdown cell `# Title` (and a `> summary` line)')
    if module:  # after the title cell: where this chapter's code lives
        at = next(i for i, c in enumerate(cells) if c['cell_type'] == 'markdown' and _TITLE.search(c['source'])) + 1
        cells.insert(at, {'cell_type': 'markdown', 'metadata': {},
                          'source': f'```{{admonition}} Module\n:class: chapter-module\n'
                                    f'This chapter writes {{py:mod}}`{module}`: see its {{doc}}`API reference <api/{module}>`.\n```'})
    cells.extend(extra_cells)
    for i, c in enumerate(cells): c['id'] = f'cell-{i}'
    ORIGINS[path.name] = (path, [c.pop('_origin', None) for c in cells])
    meta = {'kernelspec': nb.get('metadata', {}).get('kernelspec') or
                          {'display_name': 'Python 3 (ipykernel)', 'language': 'python', 'name': 'python3'},
            'language_info': {'name': 'python', 'pygments_lexer': 'ipython3'}}
    return {'cells': cells, 'metadata': meta, 'nbformat': 4, 'nbformat_minor': 5}, module


_SPHINX_LOCATION = re.compile(r'(?P<path>\S*?(?P<name>[^/\s]+\.ipynb)):(?P<line>\d+):')

def locate(message: str) -> str:
    "Point a Sphinx message about build/docs/src/X.ipynb:CCCCLLLL (myst-nb: (cell+1)*10000+line) at the notebook in nbs/."
    def sub(m):
        origin = ORIGINS.get(m.group('name'))
        if not origin or str(SRC) not in m.group('path'): return m.group(0)
        path, cells = origin
        cell, line = divmod(int(m.group('line')), 10000)
        cell, line = cell - 1, max(line - 1, 1)  # myst-nb numbers the lines of cell i from (i + 1) * 10000 + 1
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        if cell < len(cells) and cells[cell] is not None: return f'{rel} cell {cells[cell]} (from 0), line {line}:'
        return f'{rel} (a cell the docs build added):'
    return _SPHINX_LOCATION.sub(sub, message)


def md_cell(text: str) -> dict:
    return {'cell_type': 'markdown', 'metadata': {}, 'source': text}


def toctree(caption: str, entries: list[str]) -> str:
    "A MyST toctree directive listing `entries` (document names) under `caption`."
    return '```{toctree}\n:caption: ' + caption + '\n:maxdepth: 1\n\n' + '\n'.join(entries) + '\n```\n'


def api_page(module: str, chapter: str | None) -> str:
    "The reStructuredText page of one module's API reference (autodoc)."
    title = module
    lines = [title, '=' * len(title), '']
    if chapter: lines += [f'Written by the chapter :doc:`../{chapter}`; every public function and class, with its arguments.', '']
    lines += [f'.. automodule:: {module}', '']
    return '\n'.join(lines)


def copy_assets(nbs: Path, dest: Path) -> int:
    "Copy the files the notebooks may link to (images, small data) from nbs/ into the source tree; returns how many."
    n = 0
    for p in nbs.rglob('*'):
        rel = p.relative_to(nbs)
        if not p.is_file() or p.suffix.lower() not in ASSET_SUFFIXES: continue
        if any(part.startswith(('.', '_')) for part in rel.parts): continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest / rel); n += 1
    return n


def ensure_mathjax(folder: Path) -> bool:
    "A local MathJax in `folder`/mathjax (from the npm registry, once), so math renders offline; False if npm is missing."
    target = folder / 'mathjax'
    if (target / 'tex-chtml.js').is_file() and (target / 'VERSION').is_file() \
       and (target / 'VERSION').read_text().strip() == MATHJAX_VERSION: return True
    npm = shutil.which('npm')
    if npm is None: return False
    prefix = BUILD / 'npm'
    try:
        r = subprocess.run([npm, 'install', '--no-save', '--no-audit', '--no-fund', '--loglevel=error', '--prefix', str(prefix),
                            f'mathjax@{MATHJAX_VERSION}'], capture_output=True, text=True, timeout=300)
        err = r.stderr.strip()[-500:] if r.returncode else ''
    except subprocess.TimeoutExpired: err = 'timed out after 300 s'
    es5 = prefix / 'node_modules' / 'mathjax' / 'es5'
    if err or not (es5 / 'tex-chtml.js').is_file():
        print(f'build_docs: npm could not install mathjax@{MATHJAX_VERSION}: {err}', file=sys.stderr)
        return False
    if target.exists(): shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(es5 / 'tex-chtml.js', target / 'tex-chtml.js')
    shutil.copy2(es5.parent / 'LICENSE', target / 'LICENSE')
    for sub in ('input/tex/extensions', 'output/chtml/fonts/woff-v2', 'ui', 'a11y', 'adaptors'):
        if (es5 / sub).is_dir(): shutil.copytree(es5 / sub, target / sub, dirs_exist_ok=True)
    (target / 'VERSION').write_text(MATHJAX_VERSION + '\n')
    return True


def prepare(cfg: dict, nbs: Path) -> dict:
    "Write the Sphinx source tree in build/docs/src from the notebooks in `nbs`; returns what it holds."
    lib = cfg['lib_name']
    if SRC.exists(): shutil.rmtree(SRC)
    (SRC / 'api').mkdir(parents=True)
    chapters = sorted(nbs.glob('[0-9]*.ipynb'))
    if not chapters: raise FileNotFoundError(f'no chapters (nbs/[0-9]*.ipynb) in {nbs}')
    from bert_book_sphinx import public_modules
    module_chapter = {}
    for path in chapters:
        nb, module = process_notebook(path, lib)
        (SRC / path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
        if module: module_chapter.setdefault(module, path.stem)
    modules = list(public_modules(lib))
    unexported = {m: c for m, c in module_chapter.items() if m not in modules}
    if unexported:
        raise ValueError('these chapters export modules that are not in the package; run nbdev_export: ' +
                         ', '.join(f'nbs/{c}.ipynb -> {m}' for m, c in unexported.items()))
    for module in modules:
        (SRC / 'api' / f'{module}.rst').write_text(api_page(module, module_chapter.get(module)), encoding='utf-8')
    nav = [md_cell('## Contents\n\n' + toctree('Chapters', [p.stem for p in chapters])),
           md_cell(toctree('API reference', [f'api/{m}' for m in modules]))]
    index = nbs / cfg.get('readme_nb', 'index.ipynb')
    if index.is_file():
        nb, _ = process_notebook(index, lib, extra_cells=nav)
        (SRC / 'index.ipynb').write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    else:  # the landing page notebook is not written yet: a stand-in from settings.ini
        print(f'build_docs: {index} is missing; the landing page is made from settings.ini', file=sys.stderr)
        body = f"# {cfg['title']}\n\n> {cfg['description']}\n\n" + ''.join(c['source'] + '\n' for c in nav)
        (SRC / 'index.md').write_text(body, encoding='utf-8')
    assets = copy_assets(nbs, SRC)
    return {'chapters': [p.stem for p in chapters], 'modules': modules, 'assets': assets}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=None, help='output folder (default: doc_path of settings.ini, _docs)')
    ap.add_argument('--nbs', default=None, help='the notebooks (default: nbs_path of settings.ini, nbs)')
    ap.add_argument('--no-mathjax', action='store_true', help='load MathJax from its CDN instead of a local copy')
    args = ap.parse_args(argv)
    cfg = settings()
    out = (ROOT / (args.out or cfg.get('doc_path', '_docs'))).resolve()
    t0 = time.time()
    try: info = prepare(cfg, (ROOT / (args.nbs or cfg.get('nbs_path', 'nbs'))).resolve())
    except (ValueError, FileNotFoundError) as e: sys.exit(f'build_docs: {e}')
    env = dict(os.environ)
    static = BUILD / 'static'
    if not args.no_mathjax and ensure_mathjax(static): env['BERT_BOOK_DOCS_STATIC'] = str(static)
    else: print('build_docs: MathJax will load from its CDN (no local copy)', file=sys.stderr)
    # Sphinx writes into build/docs/html (myst-nb puts its scratch folder beside the output), then the site moves
    # to `out`; a failed build leaves no site behind, so nothing can test a stale one.
    html = BUILD / 'html'
    for old in (html, out):
        if old.exists(): shutil.rmtree(old)
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-c', str(DOCS_CONF), '-d', str(BUILD / 'doctrees'),
           '-E', '-W', '--keep-going', '-n', '-q', '-j', 'auto', str(SRC), str(html)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.stdout.strip(): print(locate(r.stdout.rstrip()), file=sys.stderr)
    if r.returncode != 0:
        sys.exit(f'build_docs: sphinx-build failed (exit {r.returncode}); the warnings above say where')
    shutil.move(str(html), str(out))
    print(f"built {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}/ in {time.time() - t0:.1f} s: "
          f"{len(info['chapters'])} chapters ({', '.join(info['chapters'])}), {len(info['modules'])} API pages, "
          f"{info['assets']} assets; open {out / 'index.html'}")


if __name__ == '__main__':
    main()
