"""Sphinx glue that makes the API reference read like nbdev's docs.

- `public_symbols()`: every public name of the package (`__all__` of each module, and the members of its classes),
  used to turn `` `BertConfig` `` in the notebooks' prose and in docstrings into links, as nbdev's docs do.
- the `bbobj` role: such an automatic link. It resolves like `py:obj`; when the target is not documented it quietly
  stays code (nbdev does the same), while a hand-written `{py:obj}` that does not resolve still fails the build.
- docstrings are nbdev markdown (`code` in single backticks): they are turned into reStructuredText, and each
  argument's docment (the comment after it in the signature) becomes a `:param:` line.
"""
from __future__ import annotations
import dataclasses, importlib, inspect, pkgutil, re
from functools import lru_cache

from sphinx import addnodes
from sphinx.domains.python import PyXRefRole

PACKAGE = 'bert_book'
AUTO_FLAG = 'bert_book_auto'


@lru_cache(maxsize=None)
def public_modules(package: str = PACKAGE) -> tuple[str, ...]:
    "The dotted names of the package's public modules, sorted (`bert_book.core`, ...)."
    pkg = importlib.import_module(package)
    return tuple(sorted(f'{package}.{m.name}' for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith('_')))


@lru_cache(maxsize=None)
def public_symbols(package: str = PACKAGE) -> dict[str, tuple[str, ...]]:
    "Map each way of naming a public object (`BertConfig`, `BertConfig.to_dict`, `core.BertConfig`) to its full names."
    return _symbol_tables(package)[0]


@lru_cache(maxsize=None)
def public_members(package: str = PACKAGE) -> dict[str, tuple[str, ...]]:
    "Map the bare name of each public class member (`to_dict`) to its full names (`bert_book.core.BertConfig.to_dict`)."
    return _symbol_tables(package)[1]


@lru_cache(maxsize=None)
def _symbol_tables(package: str) -> tuple[dict, dict]:
    names: dict[str, set[str]] = {}
    members: dict[str, set[str]] = {}
    def add(short, full, table=names): table.setdefault(short, set()).add(full)
    for modname in public_modules(package):
        mod = importlib.import_module(modname)
        short_mod = modname.rsplit('.', 1)[1]
        add(modname, modname)  # `bert_book.core` links to its API page (a bare `core` is too common a word)
        for name in getattr(mod, '__all__', ()):
            obj = getattr(mod, name, None)
            full = f'{modname}.{name}'
            for short in (name, f'{short_mod}.{name}', full): add(short, full)
            if inspect.isclass(obj):
                for attr in vars(obj):
                    if attr.startswith('_'): continue
                    for short in (f'{name}.{attr}', f'{short_mod}.{name}.{attr}', f'{full}.{attr}'):
                        add(short, f'{full}.{attr}')
                    add(attr, f'{full}.{attr}', members)
    freeze = lambda t: {k: tuple(sorted(v)) for k, v in t.items()}
    return freeze(names), freeze(members)


def resolve(name: str, module: str | None = None) -> str | None:
    "The full dotted name that `name` means, preferring `module`'s own objects; None when unknown or ambiguous."
    name = name.strip()
    if name.endswith('()'): name = name[:-2]
    if not re.fullmatch(r'[A-Za-z_]\w*(\.\w+)*', name) or any(p.startswith('_') for p in name.split('.')): return None
    fulls = public_symbols().get(name, ())
    if module:  # a chapter's own objects first, its classes' methods included (`save` in the tokenizer chapter)
        own = [f for f in fulls + public_members().get(name, ()) if f.startswith(module + '.')]
        if own: return own[0] if len(own) == 1 else None
    return fulls[0] if len(fulls) == 1 else None


class AutoLinkRole(PyXRefRole):
    "A `py:obj` reference that was made automatically from `backticks`: missing targets stay plain code."
    def run(self):
        self.refdomain, self.reftype = 'py', 'obj'
        self.classes = ['xref', 'py', 'py-obj']
        nodes, messages = self.create_xref_node()
        for node in nodes: node[AUTO_FLAG] = True
        return nodes, messages


def _in_description(node) -> bool:
    "Whether a node sits in an object's description (signature, parameter types): where autodoc puts type hints."
    while node is not None:
        if isinstance(node, addnodes.desc): return True
        node = node.parent
    return False


def _quiet_auto_links(app, env, node, contnode):
    """Leave as text, without a warning, a link that cannot resolve offline and is not ours to fix: an automatic
    link whose target is not documented, or a type hint naming another library's class (`Tokenizer`, `torch.device`:
    no intersphinx without network). A reference written by hand, or to a bert_book name, that does not resolve
    still fails the build."""
    if node.get(AUTO_FLAG): return contnode
    target = node.get('reftarget', '')
    if (node.get('refdomain') == 'py' and _in_description(node)
            and not target.startswith(PACKAGE + '.') and target not in public_symbols()):
        return contnode
    return None


_BACKTICKS = re.compile(r'(?<![`\w])`([^`\n]+)`(?![`\w])')

def md_to_rst(line: str, module: str | None = None) -> str:
    "One docstring line from nbdev markdown to reStructuredText: `code` becomes a link when it names our API."
    def sub(m):
        full = resolve(m.group(1), module)
        if full: return f':bbobj:`{m.group(1)} <{full}>`'
        return f'``{m.group(1)}``'
    return _BACKTICKS.sub(sub, line)


def _docments(obj) -> dict:
    "The per-argument comments of a function, method or (data)class; empty when there are none."
    try:
        from fastcore.docments import docments
        target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else inspect.unwrap(getattr(obj, '__func__', obj))
        return {k: v for k, v in docments(target).items() if v}
    except Exception:  # builtins, C extensions, objects without source: no docments, nothing to add
        return {}


def _parameters(obj) -> list[str]:
    "The names of the arguments a caller passes, in order (no `self`), as `:param:` fields name them."
    try: sig = inspect.signature(obj)
    except (TypeError, ValueError): return []
    names = []
    for p in sig.parameters.values():
        if p.name in ('self', 'cls'): continue
        names.append({p.VAR_POSITIONAL: '\\*', p.VAR_KEYWORD: '\\*\\*'}.get(p.kind, '') + p.name)
    return names


def _process_docstring(app, what, name, obj, options, lines):
    "Rewrite a docstring in place: markdown code spans to reST, docments to `:param:` fields (in signature order)."
    module = getattr(obj, '__module__', None) or name.rsplit('.', 1)[0]
    lines[:] = [md_to_rst(l, module) for l in lines]
    if what not in ('function', 'method', 'class'): return
    docs = _docments(obj)
    if not docs: return
    fields = []
    for arg in _parameters(obj):
        if any(l.startswith(f':param {arg}:') for l in lines): continue
        comment = docs.get(arg.replace('\\*', ''))
        fields.append(f':param {arg}: {md_to_rst(comment, module)}' if comment else f':param {arg}:')
    if docs.get('return') and not any(l.startswith(':return') for l in lines):
        fields.append(f":returns: {md_to_rst(docs['return'], module)}")
    if fields:
        if lines and lines[-1].strip(): lines.append('')
        lines.extend(fields)


def _remember_class(app, what, name, obj, options, signature, return_annotation):
    "Note the class autodoc is documenting, for `_skip_dataclass_fields`."
    if what in ('class', 'exception'): app.env.temp_data['bert_book_class'] = obj


def _skip_dataclass_fields(app, what, name, obj, skip, options):
    "A dataclass's fields are its parameters (listed with the class): do not list them again as attributes."
    cls = app.env.temp_data.get('bert_book_class')
    if what == 'class' and cls is not None and dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}:
        return True
    return None


def setup(app):
    app.add_role('bbobj', AutoLinkRole())
    app.connect('missing-reference', _quiet_auto_links)
    app.connect('autodoc-process-docstring', _process_docstring)
    app.connect('autodoc-process-signature', _remember_class)
    app.connect('autodoc-skip-member', _skip_dataclass_fields)
    return {'version': '1.0', 'parallel_read_safe': True, 'parallel_write_safe': True}
