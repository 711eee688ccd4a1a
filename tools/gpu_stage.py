"""Gather the wheels that device calls carried (tools/gpu_wheels.py's bundles) in a staging folder that outlives the
call, join the parts of cut wheels, check every file against the MANIFEST, and print the wheels ready to install.
Standard library only: it runs on the GPU machine before anything is installed (called by tools/gpu_check.sh).

    python3 tools/gpu_stage.py BUNDLE_ROOT STAGE     # prints one wheel path a line; exit 1 if something is missing
"""
from __future__ import annotations
import hashlib, shutil, sys
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''): h.update(block)
    return h.hexdigest()


def main(bundle_root: str, stage: str) -> int:
    root, stage = Path(bundle_root), Path(stage)
    (stage / 'files').mkdir(parents=True, exist_ok=True)
    (stage / 'wheels').mkdir(parents=True, exist_ok=True)
    carried = sorted(p for p in root.glob('*/*') if p.is_file()) if root.is_dir() else []
    for p in carried:  # this call's bundle(s): into the staging folder, which stays while the machine stays warm
        target = stage / 'files' / p.name
        if not target.exists() or target.stat().st_size != p.stat().st_size: shutil.copy2(p, target)
    bundles = sorted({p.parent.name for p in carried})
    print(f'gpu_stage: this call carried bundle(s) {", ".join(bundles) or "none"} ({len(carried)} files) from {root}',
          file=sys.stderr)
    manifest = stage / 'files' / 'MANIFEST'
    if not manifest.exists():
        print('gpu_stage: no MANIFEST carried (run `make wheels` here and carry .whl/N): nothing to install', file=sys.stderr)
        return 1
    entries = [line.split() for line in manifest.read_text().splitlines() if line and not line.startswith('#')]
    missing, wheels = [], {}
    for name, digest, bundle, wheel, part in entries:
        if bundle == '0': continue                       # a whole cut wheel: checked after joining
        f = stage / 'files' / name
        if not f.exists(): missing.append((bundle, name)); continue
        stamp = stage / 'files' / (name + '.ok')         # checked once per machine
        if not stamp.exists():
            if sha256(f) != digest: sys.exit(f'gpu_stage: {name} is damaged (sha256 differs from the MANIFEST)')
            stamp.touch()
        wheels.setdefault(wheel, []).append((-1 if part == '-' else int(part), f))
    if missing:
        need = sorted({b for b, _ in missing})
        print(f'gpu_stage: bundle(s) {", ".join(need)} not staged on this machine yet ({len(missing)} files, e.g. '
              f'{missing[0][1]}): carry .whl/{need[0]} in an earlier call of the same warm machine '
              f'(`bash tools/gpu_check.sh --stage-only`); installing what is here', file=sys.stderr)
    whole = {e[0]: e[1] for e in entries if e[2] == '0'}
    for wheel, parts in sorted(wheels.items()):
        target = stage / 'wheels' / wheel
        if parts[0][0] == -1:
            if not target.exists(): shutil.copy2(parts[0][1], target)
        elif {e[0] for e in entries if e[3] == wheel and e[2] != '0'} <= {p.name for _, p in parts}:
            if not target.exists():
                with open(target.with_suffix('.joining'), 'wb') as out:
                    for _, p in sorted(parts):
                        with open(p, 'rb') as f: shutil.copyfileobj(f, out)
                if sha256(target.with_suffix('.joining')) != whole[wheel]: sys.exit(f'gpu_stage: joined {wheel} is damaged')
                target.with_suffix('.joining').rename(target)
        else:
            continue                                      # some parts are still missing
        print(target)
    return 1 if missing else 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:3]))
