"""Check the built site as a reader sees it: serve _docs/ on loopback and open it in headless Chromium.

Checks (each prints `ok` or `FAIL` with the reason; the script exits 1 if any failed):
- every page's local links and images point at files that exist (a static crawl of all the HTML);
- the landing page: its <title> names the book, and the navigation lists every chapter (nbs/[0-9]*.ipynb) in order
  and the API reference;
- a chapter: the first one with a figure (an <img> in the article; when chapters past the first exist, one of them
  must have a figure) shows its title, the figure (served, a real PNG/SVG/JPEG), a code cell (`div.cell` with
  `highlight-ipython3`) free of nbdev's `#|` directives, and typeset math where it has any;
- the figures drawn for the book (FIGURE_PAGES: the encoder's diagrams, the masked batch): each page shows at least as
  many figures as its notebook stores, the named section holds one, every one is served as a real image, and the
  browser, scrolled to that section, has loaded all of them;
- search: search.html finds `BertConfig` (the search index loads and answers);
- screenshots of the landing page, the chapter and each figure page's section in _docs/_screenshots/ (1280x2000).

Chromium runs with no network but loopback (`--host-resolver-rules`), a fresh profile, and a time limit per page.
Usage: python tools/check_docs.py [--site _docs] [--chromium /usr/bin/chromium]
"""
from __future__ import annotations
import argparse, contextlib, functools, http.server, json, re, shutil, subprocess, sys, tempfile, threading, time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlencode, urlsplit
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[1]
TITLE = 'bert_book'
PAGE_TIMEOUT_S = 60
# pages whose figures the book draws in code (issue 15), and the heading of a section that must hold one of them
FIGURE_PAGES = {'04_encoder': 'Embeddings', '03_masking': 'The collator'}
IMAGE_TYPES = ('image/png', 'image/svg+xml', 'image/jpeg')


# -- a tiny DOM: enough to ask for elements by tag and class -------------------------------------------------------
class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.text_parts = tag, dict(attrs), parent, [], []
    @property
    def classes(self): return set((self.attrs.get('class') or '').split())
    def text(self): return ''.join(p if isinstance(p, str) else p.text() for p in self.text_parts)
    def iter(self):
        yield self
        for c in self.children: yield from c.iter()
    def find_all(self, tag=None, cls=None):
        return [n for n in self.iter() if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)]
    def find(self, tag=None, cls=None):
        return next(iter(self.find_all(tag, cls)), None)

VOID = {'area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'source', 'track', 'wbr'}

class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node('#document', {})
    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node); self.cur.text_parts.append(node)
        if tag not in VOID: self.cur = node
    def handle_startendtag(self, tag, attrs):
        node = Node(tag, attrs, self.cur); self.cur.children.append(node); self.cur.text_parts.append(node)
    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag: n = n.parent
        if n is not None and n.parent is not None: self.cur = n.parent
    def handle_data(self, data): self.cur.text_parts.append(data)

def parse_html(html: str) -> Node:
    b = TreeBuilder(); b.feed(html); b.close(); return b.root


# -- serving and the browser ---------------------------------------------------------------------------------------
VIEW = '/__check__/view.html'
# A page of the check's own (never part of the site): it opens a site page in a same-origin iframe of the window's
# size, scrolls it to an element (headless Chromium cannot screenshot a page opened at a #fragment), then writes what
# the browser made of the page's figures (loaded? how wide?) into #result, for --dump-dom to read.
VIEW_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>view</title></head>
<body style="margin:0;overflow:hidden"><iframe id="f" style="border:0;width:100vw;height:100vh"></iframe>
<pre id="result" style="display:none">pending</pre><script>
const q = new URLSearchParams(location.search), f = document.getElementById('f');
f.onload = () => {
  const w = f.contentWindow, d = f.contentDocument;
  d.documentElement.style.scrollBehavior = 'auto';
  const el = q.get('id') ? d.getElementById(q.get('id')) : null;
  if (el) w.scrollTo(0, el.getBoundingClientRect().top + w.scrollY - 72);
  setTimeout(() => {
    const imgs = [...d.querySelectorAll('article img')].filter(i => !i.classList.contains('logo__image'));
    document.getElementById('result').textContent = JSON.stringify(
      {scrolled: w.scrollY, images: imgs.map(i => ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}))});
  }, 1500);
};
f.src = '/' + q.get('page');
</script></body></html>"""


@contextlib.contextmanager
def serve(folder: Path):
    "Serve `folder` (and the check's VIEW page) on 127.0.0.1, a free port, in a thread; yields the base URL."
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            if urlsplit(self.path).path != VIEW: return super().do_GET()
            body = VIEW_HTML.encode()
            self.send_response(200)
            self.send_header('Content-Type', 'text/html; charset=utf-8'); self.send_header('Content-Length', str(len(body)))
            self.end_headers(); self.wfile.write(body)
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Handler, directory=str(folder)))
    t = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.2}, daemon=True); t.start()
    try: yield f'http://127.0.0.1:{httpd.server_address[1]}/'
    finally: httpd.shutdown(); httpd.server_close()


def view_url(base: str, page: str, element_id: str | None = None) -> str:
    "The URL of the check's view of `page`, scrolled to `element_id`."
    return f"{base.rstrip('/')}{VIEW}?{urlencode({'page': page, **({'id': element_id} if element_id else {})})}"


class Chromium:
    "Headless Chromium, one fresh profile per call, no network beyond loopback."
    def __init__(self, binary: str):
        self.binary = binary
    def _run(self, url: str, *flags: str) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix='bert-book-chromium-') as profile:
            cmd = [self.binary, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                   '--disable-background-networking', '--disable-component-update', '--disable-sync',
                   '--disable-dev-shm-usage', '--hide-scrollbars', '--mute-audio', f'--user-data-dir={profile}',
                   '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', '--virtual-time-budget=8000',
                   *flags, url]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=PAGE_TIMEOUT_S)
    def dom(self, url: str) -> str:
        "The page's DOM after its scripts ran (MathJax, search)."
        r = self._run(url, '--dump-dom')
        if r.returncode != 0 or '<html' not in r.stdout:
            raise RuntimeError(f'chromium could not load {url} (exit {r.returncode}): {r.stderr.strip()[-800:]}')
        return r.stdout
    def screenshot(self, url: str, path: Path, size=(1280, 2000)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists(): path.unlink()
        r = self._run(url, f'--screenshot={path}', f'--window-size={size[0]},{size[1]}')
        if not path.is_file() or path.stat().st_size < 10_000:
            raise RuntimeError(f'no screenshot of {url} (exit {r.returncode}): {r.stderr.strip()[-800:]}')
        return path


# -- checks --------------------------------------------------------------------------------------------------------
class Report:
    def __init__(self): self.passed, self.failed = 0, 0
    def check(self, ok: bool, what: str, why: str = ''):
        if ok: self.passed += 1; print(f'  ok    {what}')
        else: self.failed += 1; print(f'  FAIL  {what}' + (f': {why}' if why else ''))
        return ok


def local_targets(site: Path):
    "Each (page, href) of every HTML page that points inside the site."
    for page in sorted(site.rglob('*.html')):
        if {'_screenshots', '_static'} & set(page.relative_to(site).parts): continue  # theme templates live in _static
        for m in re.finditer(r'''(?:href|src)=["']([^"'#]+)(?:#[^"']*)?["']''', page.read_text(encoding='utf-8')):
            url = m.group(1)
            if re.match(r'^[a-z][a-z0-9+.-]*:', url, re.I) or url.startswith('//'): continue  # external, mailto:, data:
            yield page, url


def check_links(site: Path, report: Report):
    "Every local href and src of every page points at a file that exists."
    broken, n = [], 0
    for page, url in local_targets(site):
        n += 1
        target = (page.parent / unquote(urlsplit(url).path)).resolve()
        if target.is_dir(): target = target / 'index.html'
        if not target.exists(): broken.append(f'{page.relative_to(site)} -> {url}')
    report.check(not broken and n > 0, f'{n} local links and images resolve', '; '.join(broken[:10]))


NBS = ROOT / 'nbs'

def chapter_names() -> list[str]:
    "The chapters the site must show, in reading order (nbs/[0-9]*.ipynb)."
    return [p.stem for p in sorted(NBS.glob('[0-9]*.ipynb'))]


def notebook_title(name: str) -> str:
    "The text of a chapter's `# Title` (what its page's h1 must say)."
    nb = json.loads((NBS / f'{name}.ipynb').read_text(encoding='utf-8'))
    for cell in nb['cells']:
        if cell['cell_type'] == 'markdown':
            m = re.search(r'^#\s+(.+?)\s*$', ''.join(cell['source']), re.M)
            if m: return re.sub(r'[`*_]', '', m.group(1))
    return ''


def hidden_code(name: str) -> list[str]:
    "The code of a chapter's `#| hide` cells, less their directive lines."
    nb = json.loads((NBS / f'{name}.ipynb').read_text(encoding='utf-8'))
    out = []
    for cell in nb['cells']:
        lines = ''.join(cell['source']).splitlines() if cell['cell_type'] == 'code' else []
        if any(re.match(r'^#\|\s*hide\s*$', l.strip()) for l in lines):
            body = '\n'.join(l for l in lines if not l.strip().startswith('#|')).strip()
            if body: out.append(body)
    return out


def notebook_figures(name: str) -> int:
    "How many images a chapter's stored outputs hold, in the cells its page shows (not `#| hide`, not `#| output: false`)."
    nb = json.loads((NBS / f'{name}.ipynb').read_text(encoding='utf-8'))
    n = 0
    for cell in nb['cells']:
        if cell['cell_type'] != 'code': continue
        directives = {m.group(1).strip() for l in ''.join(cell['source']).splitlines() if (m := re.match(r'^\s*#\|\s*(.+)$', l))}
        if 'hide' in directives or 'output: false' in directives: continue
        n += sum(any(t in o.get('data', {}) for t in IMAGE_TYPES) for o in cell.get('outputs', []))
    return n


def article(dom: Node) -> Node | None:
    return dom.find('article', 'bd-article') or dom.find('main')


def check_landing(browser, base, site, shots, report):
    dom = parse_html(browser.dom(base + 'index.html'))
    title = dom.find('title')
    report.check(title is not None and TITLE in title.text(), f'landing page <title> names the book ({title.text().strip() if title else None!r})')
    report.check(dom.find('h1') is not None, 'landing page has a heading')
    nav = dom.find('nav', 'bd-docs-nav') or dom.find('div', 'bd-sidebar-primary')
    hrefs = [a.attrs.get('href', '') for a in nav.find_all('a')] if nav else []
    pages = [h.split('#')[0] for h in hrefs]
    chapters = chapter_names()
    positions = [pages.index(f'{c}.html') if f'{c}.html' in pages else -1 for c in chapters]
    missing = [c for c, p in zip(chapters, positions) if p < 0]
    report.check(not missing and positions == sorted(positions),
                 f'navigation lists all {len(chapters)} chapters in reading order', f'missing {missing}' if missing else f'order {positions}')
    report.check(any(p.startswith('api/') for p in pages), 'navigation lists the API reference')
    report.check(dom.find('form', 'bd-search') is not None or dom.find('input') is not None, 'landing page has a search box')
    shot = browser.screenshot(base + 'index.html', shots / 'landing.png')
    report.check(True, f'screenshot {shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot}')
    return shot


def figures(page: Node) -> list[Node]:
    "The <img> of notebook outputs and markdown in an article (not the theme's logos)."
    art = article(page)
    return [i for i in (art.find_all('img') if art else []) if not (i.classes & {'logo__image'})]


def served_image(base: str, src: str) -> tuple[bool, str]:
    "Whether the site serves `src` as a real PNG, JPEG or SVG, and its Content-Type (or the error)."
    try:
        with urlopen(base + src, timeout=10) as r: head = r.read(16); ctype = r.headers.get('Content-Type', '')
        return head.startswith(b'\x89PNG') or head.startswith(b'\xff\xd8') or b'<svg' in head or b'<?xml' in head, ctype
    except OSError as e: return False, str(e)


def section_id(node: Node) -> str | None:
    "The id of the innermost <section> that holds `node`."
    while node is not None and not (node.tag == 'section' and node.attrs.get('id')): node = node.parent
    return node.attrs['id'] if node is not None else None


def browser_figures(browser, base: str, page: str, element_id: str | None) -> tuple[list[dict], list[dict], str]:
    "The browser's view of `page` scrolled to `element_id`: every figure it reports, those loaded, and its raw result."
    result = parse_html(browser.dom(view_url(base, page, element_id))).find('pre')
    try: seen = json.loads(result.text())['images']
    except (AttributeError, ValueError, KeyError): seen = []
    return seen, [i for i in seen if i['complete'] and i['width'] > 0], result.text() if result else 'no result'


def check_chapter(browser, base, site, shots, report, mathjax_local: bool):
    chapters = chapter_names()
    chosen, dom = None, None
    for name in chapters:
        if not (site / f'{name}.html').is_file(): continue  # the navigation check reports it
        d = parse_html((site / f'{name}.html').read_text(encoding='utf-8'))
        if figures(d): chosen = name; break
    if chosen is None:  # allowed only while the book is its first chapter alone
        if len(chapters) > 1: report.check(False, 'a chapter has a figure', f'none of {chapters} shows an <img>')
        else: print(f'  note  no chapter has a figure yet (only {chapters})')
        chosen = chapters[0]
    url = base + f'{chosen}.html'
    dom = parse_html(browser.dom(url))
    art = article(dom)
    h1 = art.find('h1') if art else None
    want = notebook_title(chosen)
    report.check(h1 is not None and want and want in h1.text(), f'{chosen}: title {want!r} on the page')
    imgs = figures(dom)
    if imgs:
        src = imgs[0].attrs.get('src', '')
        real, ctype = served_image(base, src)
        report.check(real, f'{chosen}: figure {src} is served ({ctype})')
    cells = [c for c in (art.find_all('div', 'cell') if art else []) if c.find('div', 'highlight-ipython3')]
    code = [c.find('pre').text() for c in cells if c.find('pre')]
    report.check(bool(code) and any(s.strip() for s in code), f'{chosen}: {len(cells)} code cells (div.cell, highlight-ipython3)')
    leaked = [s.splitlines()[0] for s in code if re.search(r'^\s*#\s?\|', s, re.M) or 'NBVAL_' in s]
    report.check(not leaked, f'{chosen}: no nbdev directives in the code shown', f'{leaked[:3]}')
    hidden = hidden_code(chosen)
    bodies = {'\n'.join(l for l in c.splitlines() if not l.strip().startswith('#|')).strip() for c in code}
    shown_hidden = [h.splitlines()[0] for h in hidden if h in bodies]
    report.check(not shown_hidden, f'{chosen}: its {len(hidden)} `#| hide` cells are not shown', f'{shown_hidden[:3]}')
    maths = (art.find_all('span', 'math') + art.find_all('div', 'math')) if art else []
    if maths and mathjax_local:
        report.check(bool(dom.find_all('mjx-container')), f'{chosen}: {len(maths)} formulas typeset by MathJax (served locally)')
    shot = browser.screenshot(url, shots / f'{chosen}.png')
    report.check(True, f'screenshot {shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot}')
    if imgs:  # the browser's own view of the figure: scrolled to the section that holds it, loaded, screenshot
        where = section_id(imgs[0])
        seen, shown, raw = browser_figures(browser, base, f'{chosen}.html', where)
        report.check(len(shown) == len(seen) > 0, f'{chosen}: the browser shows {len(shown)} of {len(seen)} figures',
                     f"not loaded: {[i['src'] for i in seen if i not in shown] or raw}")
        fig = browser.screenshot(view_url(base, f'{chosen}.html', where), shots / f'{chosen}-figure.png')
        report.check(True, f'screenshot {fig.relative_to(ROOT) if fig.is_relative_to(ROOT) else fig}')
    return shot


def heading_text(h: Node) -> str:
    "A heading's own text, without the theme's anchor link (`#` or `¶`)."
    return ''.join(p if isinstance(p, str) else ('' if 'headerlink' in p.classes else p.text()) for p in h.text_parts).strip()


def check_figures(browser, base, site, shots, report, pages: dict[str, str] = FIGURE_PAGES):
    "The book's drawn figures on their pages: all there, the named section holds one, served, and loaded by the browser."
    for name, heading in pages.items():
        page = site / f'{name}.html'
        if not report.check(page.is_file(), f'{name}: page built', f'no {page.name} in the site'): continue
        dom = parse_html(page.read_text(encoding='utf-8'))
        imgs, want = figures(dom), notebook_figures(name)
        report.check(len(imgs) >= want > 0, f'{name}: {len(imgs)} figures on the page, {want} stored in the notebook')
        art = article(dom)
        sections = [s for s in (art.find_all('section') if art else [])
                    if (h := next((c for c in s.children if c.tag in ('h1', 'h2', 'h3', 'h4')), None)) is not None
                    and heading_text(h) == heading]
        in_section = [i for i in sections[0].find_all('img') if 'logo__image' not in i.classes] if sections else []
        report.check(bool(in_section), f'{name}: the section {heading!r} shows a figure',
                     'no such section' if not sections else 'no <img> in it')
        bad = [(i.attrs.get('src', ''), ctype) for i in imgs for real, ctype in [served_image(base, i.attrs.get('src', ''))] if not real]
        report.check(bool(imgs) and not bad, f'{name}: all {len(imgs)} figures are served as images', f'{bad[:3]}')
        where = sections[0].attrs.get('id') if sections else None
        seen, shown, raw = browser_figures(browser, base, f'{name}.html', where)
        report.check(len(shown) == len(seen) == len(imgs) > 0, f'{name}: the browser loads {len(shown)} of {len(seen)} figures',
                     f"not loaded: {[i['src'] for i in seen if i not in shown] or raw}")
        shot = browser.screenshot(view_url(base, f'{name}.html', where), shots / f'{name}-figures.png')
        report.check(True, f'screenshot {shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot}')


def check_search(browser, base, report, query='BertConfig'):
    "The search page answers from its index, and finds the API reference."
    dom = parse_html(browser.dom(base + f'search.html?q={query}'))
    results = dom.find('ul', 'search')
    items = results.find_all('li') if results else []
    hrefs = [a.attrs.get('href', '') for li in items for a in li.find_all('a')[:1]]
    report.check(any(h.startswith('api/') for h in hrefs), f'search for {query!r} finds {len(items)} pages, the API reference among them',
                 f'results: {hrefs[:5]}' if results else 'no results list')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--site', default=str(ROOT / '_docs'))
    ap.add_argument('--nbs', default=str(ROOT / 'nbs'), help='the notebooks the site was built from')
    ap.add_argument('--chromium', default=shutil.which('chromium') or '/usr/bin/chromium')
    args = ap.parse_args(argv)
    site = Path(args.site).resolve()
    global NBS; NBS = Path(args.nbs).resolve()
    if not (site / 'index.html').is_file(): sys.exit(f'check_docs: no site at {site} (run `make docs` first)')
    if not Path(args.chromium).exists(): sys.exit(f'check_docs: no chromium at {args.chromium} (`make docs-test` installs it)')
    shots = site / '_screenshots'
    t0, report, browser = time.time(), Report(), Chromium(args.chromium)
    mathjax_local = (site / '_static' / 'mathjax' / 'tex-chtml.js').is_file()
    print(f'checking {site} in {args.chromium}')
    check_links(site, report)
    with serve(site) as base:
        try:
            check_landing(browser, base, site, shots, report)
            check_chapter(browser, base, site, shots, report, mathjax_local)
            check_figures(browser, base, site, shots, report)
            check_search(browser, base, report)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            report.check(False, 'the browser loads the pages', str(e))
    print(f'docs: {report.passed} passed, {report.failed} failed in {time.time() - t0:.1f} s')
    sys.exit(1 if report.failed else 0)


if __name__ == '__main__':
    main()
