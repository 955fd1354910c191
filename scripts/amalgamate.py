#!/usr/bin/env python3
"""Generates single_include/dtx/dtx.hpp, the single-header form of include/dtx.

    python3 scripts/amalgamate.py            # rewrite single_include/dtx/dtx.hpp
    python3 scripts/amalgamate.py --check    # exit 1 (with a diff) if the committed file differs
    python3 scripts/amalgamate.py --shims D  # forwarding headers for building against it (tests)
    python3 scripts/amalgamate.py --parts    # each header and the opt-in parts it needs

Nothing here lists dtx's headers: every header under include/dtx goes in, placed by the include
graph. The core is what <dtx/dtx.hpp> reaches; it is always compiled. A header outside the core
belongs to the opt-in parts whose third-party headers it reaches (PARTS below), or, when it reaches
none itself, to the parts of the headers that include it. Each part's code sits in an #if block of
its macro (DTX_WITH_HTTP, ...), so an includer that defines none of them compiles the core alone.
The file has no include guard of its own (each header inside keeps its guard): including it again
after defining another macro adds that part.

A header without an include guard (<dtx/detail/push_warnings.hpp> and its pop) is text meant to
be repeated: its lines are copied wherever it is included instead of being placed once.

The output depends only on the contents of include/ (files are read in sorted order, ties in the
include graph are broken by path), so CI can regenerate it and compare.
"""

import argparse
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INCLUDE_DIR = ROOT / "include"
OUTPUT = ROOT / "single_include" / "dtx" / "dtx.hpp"
CORE_UMBRELLA = "dtx/dtx.hpp"

# The opt-in parts: name, macro, what it needs, and the third-party headers (by prefix) that only
# that part may include.
PARTS = [
    ("http", "DTX_WITH_HTTP", "Boost.Beast", ("boost/beast/",)),
    ("tls", "DTX_WITH_TLS", "OpenSSL", ("openssl/", "boost/asio/ssl", "boost/beast/ssl")),
    ("sqlite", "DTX_WITH_SQLITE", "SQLite3", ("sqlite3.h",)),
    ("postgres", "DTX_WITH_POSTGRES", "libpq", ("libpq-fe.h", "libpq/", "pg_config")),
]
PART_ORDER = {name: i for i, (name, _, _, _) in enumerate(PARTS)}
MACRO = {name: macro for name, macro, _, _ in PARTS}

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


class AmalgamationError(Exception):
    pass


GUARD_RE = re.compile(r'^#ifndef\s+DTX_\w+_HPP\s*$', re.M)


class Header:
    """One file under include/: its text, its dtx includes and the parts it needs by itself."""

    def __init__(self, name, text, textual=()):
        self.name = name  # "dtx/coordinator.hpp"
        self.lines = text.splitlines()
        self.deps_before = []  # dtx headers included before the first line of code
        self.deps_after = []  # dtx headers included after code (template bodies at the bottom)
        self.own_parts = set()
        seen_code = False
        in_comment = False
        for line in self.lines:
            stripped = line.strip()
            if in_comment:
                in_comment = "*/" not in stripped
                continue
            m = INCLUDE_RE.match(line)
            if m:
                target = m.group(2)
                if target in textual:
                    continue
                if target.startswith("dtx/"):
                    if m.group(1) == '"':
                        raise AmalgamationError(
                            f"include/{name}: write #include <{target}>, not \"{target}\"")
                    (self.deps_after if seen_code else self.deps_before).append(target)
                else:
                    for part, _, _, prefixes in PARTS:
                        if target.startswith(prefixes):
                            self.own_parts.add(part)
                continue
            if stripped.startswith("/*"):
                in_comment = "*/" not in stripped
            elif stripped and not stripped.startswith(("//", "#")):
                seen_code = True

    @property
    def deps(self):
        return self.deps_before + self.deps_after


def read_headers():
    """The guarded headers, and the unguarded ones (name -> lines) that are copied where used."""
    texts = {path.relative_to(INCLUDE_DIR).as_posix(): path.read_text(encoding="utf-8")
             for path in sorted(INCLUDE_DIR.glob("dtx/**/*.hpp"))}
    textual = {n: t.splitlines() for n, t in texts.items() if not GUARD_RE.search(t)}
    headers = {n: Header(n, t, textual) for n, t in texts.items() if n not in textual}
    if CORE_UMBRELLA not in headers:
        raise AmalgamationError(f"include/{CORE_UMBRELLA} not found")
    for h in headers.values():
        for d in h.deps:
            if d not in headers:
                raise AmalgamationError(f"include/{h.name} includes <{d}>, which is not in include/")
    return headers, textual


def closure(headers, start):
    """Every header reachable from `start` (itself included), with the path that reaches it."""
    via = {start: [start]}
    stack = [start]
    while stack:
        name = stack.pop()
        for d in headers[name].deps:
            if d not in via:
                via[d] = via[name] + [d]
                stack.append(d)
    return via


def minimal(alternatives):
    """Drops every alternative that another one (a subset of its parts) already covers."""
    alts = set(alternatives)
    return frozenset(a for a in alts if not any(b < a for b in alts))


def conditions(headers):
    """For each header, the alternatives (sets of parts) under any of which it is compiled."""
    core = closure(headers, CORE_UMBRELLA)
    reached = {}  # name -> parts reached through includes (third-party headers of the parts)

    def parts_reached(name, stack=()):
        if name in stack:
            cycle = " -> ".join(stack[stack.index(name):] + (name,))
            raise AmalgamationError(f"include cycle: {cycle}")
        if name not in reached:
            parts = set(headers[name].own_parts)
            for d in headers[name].deps:
                parts |= parts_reached(d, stack + (name,))
            reached[name] = frozenset(parts)
        return reached[name]

    cond = {}
    for name in headers:
        parts = parts_reached(name)
        if name in core:
            if parts:
                path = " -> ".join(core[name])
                raise AmalgamationError(
                    f"include/{name} is in the core ({path}) but reaches the third-party headers "
                    f"of the opt-in part(s) {', '.join(sorted(parts))}")
            cond[name] = frozenset([frozenset()])
        elif parts:
            cond[name] = frozenset([parts])

    includers = {name: [h.name for h in headers.values() if name in h.deps] for name in headers}
    # The others are compiled when any header that includes them is.
    pending = [n for n in headers if n not in cond]
    while pending:
        progressed = False
        for name in list(pending):
            if all(i in cond for i in includers[name]) and includers[name]:
                cond[name] = minimal(a for i in includers[name] for a in cond[i])
                pending.remove(name)
                progressed = True
        if not progressed:
            orphan = pending[0]
            raise AmalgamationError(
                f"include/{orphan} belongs to no part: include it from <{CORE_UMBRELLA}> (core) or "
                f"from a header of an opt-in part, or let it include that part's third-party headers")
    return cond


def implications(cond):
    """Part p implies q when every header that needs p needs q too (TLS is HTTPS, say)."""
    sets = [a for alts in cond.values() for a in alts if a]
    result = {}
    for p in MACRO:
        with_p = [a for a in sets if p in a]
        if with_p:
            common = frozenset.intersection(*with_p) - {p}
            if common:
                result[p] = common
    return result


def simplified(alternatives, implied):
    out = set()
    for a in alternatives:
        out.add(frozenset(p for p in a if not any(p in implied.get(q, ()) for q in a if q != p)))
    return minimal(out)


def section_key(alternatives):
    return sorted((len(a), sorted(PART_ORDER[p] for p in a)) for a in alternatives)


def order(headers, cond):
    """A topological order (includes before includers, bottom includes after) that keeps the
    headers of one condition together where it can."""
    after = {name: set() for name in headers}  # name -> names that must come before it
    for h in headers.values():
        after[h.name].update(h.deps_before)
        for d in h.deps_after:
            after[d].add(h.name)
    done, result = set(), []
    current = None
    while len(result) < len(headers):
        ready = [n for n in headers if n not in done and after[n] <= done]
        if not ready:
            raise AmalgamationError("include cycle through a bottom include: "
                                    + " -> ".join(cycle(after, done)))
        same = [n for n in ready if cond[n] == current]
        pick = min(same) if same else min(ready, key=lambda n: (section_key(cond[n]), n))
        current = cond[pick]
        done.add(pick)
        result.append(pick)
    return result


def cycle(after, done):
    """One cycle among the headers not placed yet (each must come after the next one)."""
    name = min(n for n in after if n not in done)
    path = []
    while name not in path:
        path.append(name)
        name = min(n for n in after[name] if n not in done)
    return path[path.index(name):] + [name]


def condition_text(alternatives):
    terms = []
    for a in sorted(alternatives, key=lambda a: sorted(PART_ORDER[p] for p in a)):
        parts = [f"defined({MACRO[p]})" for p in sorted(a, key=PART_ORDER.get)]
        terms.append(" && ".join(parts) if len(alternatives) == 1 or len(parts) == 1
                     else "(" + " && ".join(parts) + ")")
    return " || ".join(terms)


def version(headers):
    text = "\n".join(headers["dtx/version.hpp"].lines)
    m = re.search(r'#define\s+DTX_VERSION\s+"([^"]+)"', text)
    if not m:
        raise AmalgamationError('include/dtx/version.hpp: no #define DTX_VERSION "x.y.z"')
    return m.group(1)


def generate():
    headers, textual = read_headers()
    cond = conditions(headers)
    implied = implications(cond)
    cond = {n: simplified(c, implied) for n, c in cond.items()}
    names = order(headers, cond)

    out = [
        f"// dtx {version(headers)}: the single-header form of the headers under include/.",
        "// Generated by scripts/amalgamate.py; edit include/ and run `python3 scripts/amalgamate.py`.",
        "//",
        "// The core (<dtx/dtx.hpp>: Boost.Asio and nlohmann::json) is always compiled. Each opt-in",
        "// part is compiled only when its macro is defined before this file is included:",
    ]
    for part, macro, needs, _ in PARTS:
        if any(part in a for c in cond.values() for a in c):
            implies = ", ".join(MACRO[q] for q in sorted(implied.get(part, ()), key=PART_ORDER.get))
            out.append(f"//   {macro:<18} {needs}" + (f"; implies {implies}" if implies else ""))
    out += [
        "// This file has no include guard of its own: including it again after defining another of",
        "// these macros adds that part.",
        "",
    ]
    for part, q in sorted(implied.items(), key=lambda kv: PART_ORDER[kv[0]]):
        for other in sorted(q, key=PART_ORDER.get):
            out += [f"#if defined({MACRO[part]}) && !defined({MACRO[other]})",
                    f"#define {MACRO[other]}", "#endif"]
    open_cond = None
    for name in names:
        c = cond[name]
        if c != open_cond:
            if open_cond is not None and any(open_cond):
                out.append(f"#endif // {condition_text(open_cond)}")
            if any(c):
                out += ["", f"#if {condition_text(c)}"]
            open_cond = c
        out += ["", f"// ---- {name} " + "-" * max(4, 92 - len(name))]
        for line in headers[name].lines:
            m = INCLUDE_RE.match(line)
            if m and m.group(2) in textual:
                out.append(f"// {line.strip()}")
                out += [t for t in textual[m.group(2)] if not t.startswith("//")]
            else:
                out.append(f"// {line.strip()}" if m and m.group(2).startswith("dtx/") else line)
    if open_cond is not None and any(open_cond):
        out.append(f"#endif // {condition_text(open_cond)}")
    return "\n".join(out) + "\n", headers, cond


def parts_of(cond, name):
    """The parts a header needs (the first alternative where there are several)."""
    first = min(cond[name], key=lambda a: (len(a), sorted(PART_ORDER[p] for p in a)))
    return sorted(first, key=PART_ORDER.get)


def write_shims(directory, headers, cond):
    """One forwarding header per header of include/, which defines the macros of the part it
    belongs to and includes the single header: code written against include/ compiles unchanged
    against the single header."""
    directory = Path(directory)
    for name in headers:
        lines = ["// Generated by scripts/amalgamate.py --shims: <" + name + "> from the single header."]
        for p in parts_of(cond, name):
            lines += [f"#ifndef {MACRO[p]}", f"#define {MACRO[p]}", "#endif"]
        lines.append(f'#include "{OUTPUT.as_posix()}"')
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed file instead of writing it")
    parser.add_argument("--shims", metavar="DIR", help="write forwarding headers into DIR")
    parser.add_argument("--parts", action="store_true",
                        help="print each header with the parts it needs (or core)")
    args = parser.parse_args()
    try:
        text, headers, cond = generate()
    except AmalgamationError as e:
        print(f"amalgamate: {e}", file=sys.stderr)
        return 2
    if args.shims:
        write_shims(args.shims, headers, cond)
        return 0
    if args.parts:
        # A header included at the bottom of another holds that one's bodies ("body"): it is
        # not meant to be included alone.
        bodies = {d for h in headers.values() for d in h.deps_after}
        for name in headers:
            print(name, ",".join(parts_of(cond, name)) or "core", *(["body"] if name in bodies else []))
        return 0
    rel = OUTPUT.relative_to(ROOT)
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    if args.check:
        if current == text:
            print(f"amalgamate: {rel} is up to date")
            return 0
        diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(),
                                         f"{rel} (committed)", f"{rel} (from include/)", lineterm=""))
        print("\n".join(diff[:200]))
        if len(diff) > 200:
            print(f"... {len(diff) - 200} more lines of diff")
        print(f"amalgamate: {rel} is out of date: run `python3 scripts/amalgamate.py` and commit it",
              file=sys.stderr)
        return 1
    if current != text:
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(text, encoding="utf-8")
    print(f"amalgamate: wrote {rel} ({len(headers)} headers, {text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
