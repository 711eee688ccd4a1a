"""Run every benchmark script `bench/bench_*.py` in turn (what `make bench` does).

Each script is run in its own interpreter (so one's memory and threads do not disturb the next) with the options given
here, e.g. `python bench/run_all.py --quick --device cpu`. An option goes only to the scripts whose source names it (a
script without `--quick` simply runs in full; the skipped options are printed). A new benchmark joins by being a
`bench/bench_<name>.py` script (or an entry of `EXTRA_SCRIPTS`) that prints its own table; accepting `--quick` (a short
smoke run) and `--device` is recommended. `--only model,conll` runs a subset. Exits non-zero if any script failed, after running all.
"""
from __future__ import annotations
import subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXTRA_SCRIPTS = {'load': HERE / 'load_test.py'}   # benchmarks not named bench_<name>.py, by the name --only uses


def name_of(script: Path) -> str:
    "The name `--only` knows a script by: bench_<name>.py gives <name>; the extras their key."
    return next((n for n, p in EXTRA_SCRIPTS.items() if p == script), script.stem[len('bench_'):])


def scripts(only: set[str] | None = None) -> list[Path]:
    "The benchmark scripts, in name order, optionally only those named (without the bench_ prefix and .py)."
    found = sorted(HERE.glob('bench_*.py')) + [p for p in EXTRA_SCRIPTS.values() if p.is_file()]
    if only:
        unknown = only - {name_of(p) for p in found}
        if unknown: raise SystemExit(f"run_all: no bench/bench_{sorted(unknown)[0]}.py; have {[p.name for p in found]}")
        found = [p for p in found if name_of(p) in only]
    return found


def options(argv: list[str]) -> list[list[str]]:
    "Group `--flag [value]` arguments: [['--quick'], ['--device', 'cpu']]."
    groups = []
    for a in argv:
        if a.startswith('--') or not groups: groups.append([a])
        else: groups[-1].append(a)
    return groups


def main(argv: list[str]) -> int:
    only = None
    if '--only' in argv:
        i = argv.index('--only')
        if i + 1 >= len(argv): raise SystemExit('run_all: --only needs a comma-separated list, e.g. --only model')
        only, argv = set(argv[i + 1].split(',')), argv[:i] + argv[i + 2:]
    failed = []
    for script in scripts(only):
        source = script.read_text(encoding='utf-8')
        passed = [g for g in options(argv) if f"'{g[0]}'" in source or f'"{g[0]}"' in source]
        skipped = [g[0] for g in options(argv) if g not in passed]
        args = [a for g in passed for a in g]
        print(f'\n## {script.name} {" ".join(args)}'.rstrip() + (f'  (does not take {", ".join(skipped)})' if skipped else ''), flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, str(script), *args]).returncode
        print(f'({script.name}: {"ok" if rc == 0 else f"FAILED with exit status {rc}"}, {time.perf_counter() - t0:.0f} s)', flush=True)
        if rc: failed.append(script.name)
    if failed: print('\nfailed:', ', '.join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
