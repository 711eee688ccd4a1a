"""Sphinx configuration of the bert_book documentation site.

`tools/build_docs.py` prepares the sources (the notebooks of nbs/ with nbdev's directives applied, the landing page,
one API page per module) in build/docs/src and runs Sphinx with this folder as its configuration directory.
Everything here is read from settings.ini, so nbdev's own `nbdev_docs` (Quarto) and this site describe the same book.
"""
import os, sys
from configparser import ConfigParser
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / '_ext'))

_ini = ConfigParser(delimiters=['='])
_ini.read(ROOT / 'settings.ini', encoding='utf-8')
cfg = _ini['DEFAULT']

# -- project ---------------------------------------------------------------------------------------------------------
project = cfg['lib_name']
author = cfg['author']
copyright = cfg['copyright']
release = version = cfg['version']
language = 'en'

extensions = [
    'myst_nb',                 # notebooks (stored outputs) and MyST markdown
    'sphinx.ext.autodoc',      # the API reference, from the installed package
    'sphinx.ext.viewcode',     # [source] links to the generated modules
    'sphinx.ext.githubpages',  # .nojekyll, so GitHub Pages serves _static/ and _images/
    'bert_book_sphinx',        # docs/_ext: nbdev docments as parameters, `backtick` links to the API
]

root_doc = 'index'
exclude_patterns = ['_build', '**.ipynb_checkpoints', 'Thumbs.db', '.DS_Store']
nitpicky = True  # a reference to one of our own objects that does not resolve is an error
# Without network there is no intersphinx: type hints that name other libraries (torch.Tensor, Tokenizer, ...) cannot
# resolve, and docs/_ext/bert_book_sphinx.py leaves them as text; every name of bert_book still must resolve.

# -- notebooks (myst-nb) ---------------------------------------------------------------------------------------------
nb_execution_mode = 'off'            # the stored outputs are the content; `make test` keeps them honest
nb_merge_streams = True              # one block for a cell's prints
nb_output_stderr = 'show'            # progress bars and messages; build_docs.py drops library warnings
nb_number_source_lines = False
nb_render_markdown_format = 'myst'   # markdown outputs (show_doc's tables) with the same parser as the prose
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'deflist', 'attrs_inline']
myst_heading_anchors = 3             # [text](01_tokenizer.ipynb#a-heading) links work
myst_dmath_double_inline = True

# -- API reference (autodoc) -----------------------------------------------------------------------------------------
autodoc_default_options = {'members': True, 'undoc-members': True, 'show-inheritance': True, 'member-order': 'bysource'}
autodoc_typehints = 'description'    # short signatures; types listed with the parameters
autodoc_typehints_format = 'short'
autodoc_preserve_defaults = True     # `device=None`, not the evaluated object
autoclass_content = 'class'
add_module_names = False
python_display_short_literal_types = True
toc_object_entries_show_parents = 'hide'

# -- HTML ------------------------------------------------------------------------------------------------------------
html_theme = 'sphinx_book_theme'
html_title = cfg['title']
html_short_title = cfg['title']
html_baseurl = cfg['doc_host'].rstrip('/') + cfg['doc_baseurl'].rstrip('/') + '/'
html_static_path = [str(DOCS / '_static')]
html_css_files = ['bert_book.css']
html_copy_source = True          # the download button offers the page's notebook (as shown, outputs included)
html_sourcelink_suffix = ''
html_show_sourcelink = False
html_last_updated_fmt = None         # keep builds reproducible
html_theme_options = {
    'repository_url': cfg['git_url'],
    'repository_branch': cfg['branch'],
    'path_to_docs': cfg['nbs_path'],
    'use_repository_button': True,
    'use_issues_button': False,
    'use_edit_page_button': False,
    'use_download_button': True,
    'use_fullscreen_button': False,
    'home_page_in_toc': True,
    'show_toc_level': 2,
    'show_navbar_depth': 1,
    'navigation_with_keys': False,
    'logo': {'text': cfg['title']},
    'navbar_persistent': [],         # search lives in the sidebar; no top bar above the book
    'secondary_sidebar_items': ['page-toc'],
}
pygments_style = 'default'
pygments_dark_style = 'monokai'

# MathJax served by the site itself (so pages work offline) when build_docs.py put a copy in a folder holding
# mathjax/tex-chtml.js; else Sphinx's default, the CDN.
_extra_static = os.environ.get('BERT_BOOK_DOCS_STATIC')
if _extra_static and (Path(_extra_static) / 'mathjax' / 'tex-chtml.js').is_file():
    html_static_path.append(_extra_static)     # its contents are copied into _static/
    mathjax_path = 'mathjax/tex-chtml.js'
