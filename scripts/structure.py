#!/usr/bin/env python3
"""Structure report for the Rust crates (issue 17): production functions longer than a limit and
import circles among the modules of each crate.

    python3 scripts/structure.py                 # report; exit 0
    python3 scripts/structure.py --check         # exit 1 if anything is over the limits
    python3 scripts/structure.py --max-fn 120 --crate weft-sidecar

Text-level reading, no compiler: test code (`*_tests.rs`, `tests.rs`, `tests/`, and everything
from a `#[cfg(test)]` module on) is left out; a module's imports are its `crate::`, `super::` and
`self::` paths, resolved to the deepest file module that exists. Comments and string literals are
blanked before braces are counted.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?"
                r"(?:extern\s+\"[^\"]*\"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)")
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};",
                       re.S)


def blank(src: str) -> str:
    """Comments, strings and char literals replaced by spaces (newlines kept)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 10]) and (i == 0 or not src[i - 1].isalnum()):
            hashes = re.match(r'r(#*)"', src[i:]).group(1)
            end = '"' + hashes
            j = src.find(end, i + len(hashes) + 2)
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", src[i:i + 4]) or src.startswith("'\\u{", i):
            j = src.find("'", i + 1)
            j = n if j < 0 else j + 1
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def production_part(text: str) -> str:
    """The file up to its first `#[cfg(test)]` module (test modules sit at the end here)."""
    m = re.search(r"^\s*#\[cfg\(test\)\]\s*\n\s*(?:#\[[^\]]*\]\s*\n\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s",
                  text, re.M)
    return text if m is None else text[:m.start()]


def is_test_file(p: Path) -> bool:
    return (p.name.endswith("_tests.rs") or p.name == "tests.rs" or "tests" in p.parts
            or "benches" in p.parts or p.name == "build.rs")


def long_functions(text: str, limit: int):
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            seg = lines[j]
            if not started and ";" in seg and "{" not in seg:
                break  # a declaration without a body
            for ch in seg:
                if ch == "{":
                    depth += 1
                    started = True
                elif ch == "}":
                    depth -= 1
            if started and depth <= 0:
                break
            j += 1
        length = j - i + 1
        if started and length > limit:
            yield m.group(1), i + 1, length
        i += 1 if not started else 1


def module_of(crate_src: Path, p: Path) -> tuple[str, ...]:
    rel = p.relative_to(crate_src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def resolve(mods: set, base: tuple, kind: str, segs: list[str]) -> tuple | None:
    if kind == "crate":
        path = list(segs)
    elif kind == "self":
        path = list(base) + segs
    else:  # super (possibly repeated)
        b = list(base)
        path = list(segs)
        while path and path[0] == "super":
            path.pop(0)
            b = b[:-1]
        b = b[:-1]
        path = b + path
    while path and tuple(path) not in mods:
        path.pop()
    return tuple(path) if path else None


def cycles(crate_src: Path):
    files = [p for p in crate_src.rglob("*.rs") if not is_test_file(p.relative_to(crate_src.parent))]
    mods = {module_of(crate_src, p): p for p in files}
    edges: dict[tuple, set] = {m: set() for m in mods}
    for m, p in mods.items():
        text = blank(production_part(p.read_text()))
        # `super` inside a `mod.rs`/`lib.rs` is relative to the module itself.
        base = m + ("_",) if p.name in ("mod.rs", "lib.rs", "main.rs") else m
        refs = [(k, s) for k, s in PATH.findall(text)]
        for k, prefix, group in USE_GROUP.findall(text):
            for item in re.split(r",", group):
                first = item.strip().split("::")[0].split(" ")[0]
                if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", first or ""):
                    refs.append((k, prefix + "::" + item.strip().split(" ")[0]))
        for kind, rest in refs:
            segs = [s for s in rest.split("::") if s]
            t = resolve(set(mods), base, kind, segs)
            # A module using its own children or parents is structure, not a circle.
            if t and t != m and t[:len(m)] != m and m[:len(t)] != t:
                edges[m].add(t)
    # Tarjan's strongly connected components.
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted("::".join(c) or "(root)" for c in comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-fn", type=int, default=120)
    ap.add_argument("--crate", action="append")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    crates = sorted(p for p in (ROOT / "crates").iterdir() if (p / "src").is_dir())
    if a.crate:
        crates = [c for c in crates if c.name in a.crate]
    bad = 0
    for c in crates:
        src = c / "src"
        for p in sorted(src.rglob("*.rs")):
            if is_test_file(p.relative_to(c)):
                continue
            text = blank(production_part(p.read_text()))
            for name, line, length in long_functions(text, a.max_fn):
                print(f"long fn   {p.relative_to(ROOT)}:{line} {name}: {length} lines")
                bad += 1
        for comp in cycles(src):
            print(f"circle    {c.name}: {' <-> '.join(comp)}")
            bad += 1
    print(f"{bad} finding(s) (functions over {a.max_fn} lines, module import circles)")
    return 1 if a.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
