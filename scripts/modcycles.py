#!/usr/bin/env python3
"""Module dependency cycles per crate: which top-level modules of a crate
refer to each other (`crate::x`, `use crate::{x, y}`), and the strongly
connected groups of more than one module. Unit tests (`tests.rs`,
`#[cfg(test)] mod tests { ... }` at the end of a file) are ignored.

usage: scripts/modcycles.py [crate-src-dir ...]   (default: every crate)
exit 1 if any crate has a cycle."""
import os, re, sys

def top_modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, src)
            parts = rel[:-3].split(os.sep)
            if parts[0] == 'bin' or parts[-1] == 'tests':
                continue
            top = parts[0]
            if top in ('lib', 'main'):
                continue
            mods.setdefault(top, []).append(p)
    return mods

def strip_tests(text):
    m = re.search(r'^#\[cfg\(test\)\]\s*\nmod tests\s*\{', text, re.M)
    return text[:m.start()] if m else text

def deps(paths, names):
    out = set()
    for p in paths:
        t = strip_tests(open(p).read())
        t = re.sub(r'//[^\n]*', '', t)
        for m in re.finditer(r'crate::\{([^}]*)\}', t, re.S):
            for item in m.group(1).split(','):
                n = item.strip().split('::')[0].strip()
                if n in names:
                    out.add(n)
        for m in re.finditer(r'crate::([a-z_][a-z0-9_]*)', t):
            if m.group(1) in names:
                out.add(m.group(1))
    return out

def sccs(graph):
    index, low, stack, on, res, i = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            res.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return res

def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    srcs = sys.argv[1:] or sorted(os.path.join(here, c, 'src') for c in
        ('seeds', 'builder', 'firstboot', 'vm', 'qemu-tests'))
    bad = False
    for src in srcs:
        mods = top_modules(src)
        graph = {m: deps(ps, set(mods)) - {m} for m, ps in mods.items()}
        cyc = [c for c in sccs(graph) if len(c) > 1]
        name = os.path.basename(os.path.dirname(os.path.abspath(src)))
        if cyc:
            bad = True
            for c in cyc:
                print(f'{name}: cycle: ' + ' <-> '.join(c))
                for m in c:
                    print(f'    {m} -> ' + ', '.join(sorted(graph[m] & set(c))))
        else:
            print(f'{name}: {len(mods)} modules, no cycle')
    sys.exit(1 if bad else 0)

main()
