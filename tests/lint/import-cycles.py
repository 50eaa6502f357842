#!/usr/bin/env python3
"""Fails when a crate's source files import each other in a circle.

The rule of the tree (README, "Architecture"): data flows one way, so no file reaches, through
its imports, back to itself. A file may use its ancestors' items (`super::Engine`, the crate's
`Error`): a module's own parent is where its shared vocabulary lives, not a sibling it could
pull into a circle. Test modules at the end of a file (`#[cfg(test)] mod tests`) are left out.

Usage: import-cycles.py CRATE_SRC_DIR...   (prints each circle; exit 1 if there is one)
"""

import os
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)(::\{)?")


def modules(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, name), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found[tuple(parts)] = os.path.join(root, name)
    return found


def code_of(path):
    text = open(path, encoding="utf-8").read()
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod tests\b", text, re.M)
    if cut:
        text = text[: cut.start()]
    # Comments say things like `super::recovery`; only code counts.
    return re.sub(r"//[^\n]*", "", text)


def braced_items(text, start):
    """The top-level items of a `{...}` use tree beginning at text[start] == '{'."""
    depth, item, items = 0, "", []
    for ch in text[start:]:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                items.append(item)
                break
        if depth == 1 and ch == ",":
            items.append(item)
            item = ""
        elif depth >= 1:
            item += ch
    return [re.split(r"[:{\s]", i.strip(), maxsplit=1)[0] for i in items if i.strip()]


def owner(path, mods):
    """The longest module prefix of `path` that is a file."""
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return ()


def edges(mods):
    graph = {m: set() for m in mods}
    for module, path in mods.items():
        text = code_of(path)
        for match in PATH.finditer(text):
            head, rest = match.group(1), match.group(2).split("::")[1:]
            if head == "crate":
                base = []
            elif head == "self":
                base = list(module)
            else:
                base = list(module[:-1])
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
            targets = [base + rest]
            if match.group(3):
                items = braced_items(text, match.end() - 1)
                targets = [base + rest + ([] if i == "self" else [i]) for i in items]
            for target in targets:
                to = owner(target, mods)
                # Ancestors (and the module itself) are not edges.
                if to == module or module[: len(to)] == to:
                    continue
                graph[module].add(to)
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main(dirs):
    failed = False
    for src in dirs:
        mods = modules(src)
        graph = edges(mods)
        for component in cycles(graph):
            failed = True
            names = sorted("::".join(m) or "crate" for m in component)
            print(f"{src}: import circle between {', '.join(names)}")
            for m in sorted(component):
                inside = sorted("::".join(t) for t in graph[m] if t in component)
                print(f"    {'::'.join(m) or 'crate'} -> {', '.join(inside)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
