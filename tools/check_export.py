"""Fail when `nbdev_export` changes anything under the library folder: notebooks and modules must agree."""
import hashlib, subprocess, sys
from pathlib import Path

LIB = Path('bert_book')

def snapshot():
    "Map each .py file under the library to the hash of its bytes."
    return {p.as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(LIB.rglob('*.py'))}

before = snapshot()
subprocess.run([str(Path(sys.executable).with_name('nbdev_export'))], check=True)
after = snapshot()
changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
if changed:
    print('nbdev_export changed these files; export the notebooks and commit the result:', *changed, sep='\n  ')
    sys.exit(1)
print(f'export in sync: {len(after)} modules')
