#!/usr/bin/env python3
"""Extracts the C++ examples of README.md and of the header comments of include/dtx into one
translation unit, so that a compiler can check them (CTest: doc_examples).

Where examples are found
  - README.md: every block fenced with ```cpp.
  - include/dtx/**/*.hpp: every comment block whose lines are indented by three spaces or more
    ("//   code"), that follows an empty comment line ("//") and holds at least one line ending
    in ';' (a statement or declaration). Indented text that follows a line of prose (lists, the
    status tables, wire formats) is not C++ and is left alone.

How a block is compiled
  - Declarations (struct, class, enum, namespace, template, using, a function definition, a
    macro such as NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE) go to a namespace of the block's own;
    #include lines go to the top of the file; every other statement goes, in order, into a
    coroutine (asio::awaitable<void>) that can use the objects listed in PRELUDE below
    (ioc, ex, journal, participants, coord, tx, saga, http, db, inventory, token, item...) and the example
    payload types (reservation, charge, points, parcel), all declared there. A block may declare
    its own objects of those names: they hide the prepared ones.
  - `...` stands for code left out: a line holding only `...` is dropped, any other `...` that
    is not a pack expansion (`args...`) becomes `{}`.
  - A co_await expression must not build a braced list or a lambda (`co_await f({...})`,
    `co_await f([&] {...})`): g++ 12 destroys such temporaries twice. Examples build them in a
    statement of their own, as users should; the script refuses the others.
  - A block whose first line contains `// not compiled` is skipped (keep them few); --list shows
    them.

    scripts/doc_examples.py --list                  # every block found, and whether it is compiled
    scripts/doc_examples.py --output examples.cpp   # writes the translation unit

Compiler messages point at the README or header line (#line directives).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SKIP_MARK = "// not compiled"

PRELUDE = r"""
// The #line directives make g++ see the examples as code of the headers they come from, where a
// lambda type in a template argument would be a real problem.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wsubobject-linkage"
#endif

#include <dtx/dtx.hpp>
#include <dtx/http.hpp>
#include <dtx/http/tls.hpp>
#include <dtx/postgres.hpp>
#include <dtx/sqlite.hpp>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace asio = boost::asio;

namespace dtx_doc {

// The payloads the examples send.
struct reservation {
    std::string sku;
    int qty = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(reservation, sku, qty)
struct charge {
    std::int64_t account = 0;
    std::int64_t amount = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(charge, account, amount)
struct points {
    std::int64_t n = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(points, n)
struct parcel {
    std::string order_id;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(parcel, order_id)

// The objects every example may use without declaring them.
#define DTX_DOC_EXAMPLE_PARAMETERS                                                                 \
    [[maybe_unused]] asio::io_context &ioc, [[maybe_unused]] asio::any_io_executor ex,             \
        [[maybe_unused]] dtx::journal &journal,                                                    \
        [[maybe_unused]] dtx::participant_registry &participants,                                  \
        [[maybe_unused]] dtx::coordinator &coord, [[maybe_unused]] dtx::tcc_transaction &tx,       \
        [[maybe_unused]] dtx::saga_transaction &saga, [[maybe_unused]] dtx::http::client &http,    \
        [[maybe_unused]] dtx::sqlite::connection &db, [[maybe_unused]] dtx::sqlite::barrier &inventory,\
        [[maybe_unused]] std::string token, [[maybe_unused]] std::string incoming_traceparent,     \
        [[maybe_unused]] reservation item, [[maybe_unused]] charge amount

} // namespace dtx_doc
"""


@dataclass
class Block:
    source: str  # path relative to ROOT
    line: int  # 1-based line of the block's first code line
    lines: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> bool:
        return bool(self.lines) and SKIP_MARK in self.lines[0]

    def where(self) -> str:
        return f"{self.source}:{self.line}"


# ---- finding blocks --------------------------------------------------------------------------


def markdown_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    current: Block | None = None
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if current is None:
            if re.fullmatch(r"\s*```cpp\s*", text):
                current = Block(str(path.relative_to(ROOT)), n + 1)
        elif re.fullmatch(r"\s*```\s*", text):
            blocks.append(current)
            current = None
        else:
            current.lines.append(text)
    if current is not None:
        sys.exit(f"{path}: a ```cpp block is not closed")
    return blocks


def ends_statement(line: str) -> bool:
    code = re.sub(r"\s//.*$", "", line).rstrip()
    return code.endswith(";")


def header_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    n = 0
    while n < len(lines):
        if lines[n].strip() == "//" and n + 1 < len(lines) and lines[n + 1].startswith("//   "):
            block = Block(str(path.relative_to(ROOT)), n + 2)
            n += 1
            while n < len(lines) and lines[n].startswith("//   "):
                block.lines.append(lines[n][5:])
                n += 1
            if any(ends_statement(line) for line in block.lines):
                blocks.append(block)
            continue
        n += 1
    return blocks


def find_blocks() -> list[Block]:
    blocks = markdown_blocks(ROOT / "README.md")
    for header in sorted((ROOT / "include" / "dtx").rglob("*.hpp")):
        blocks.extend(header_blocks(header))
    return blocks


# ---- splitting a block into includes, declarations and statements ----------------------------

STATEMENT_KEYWORDS = {"if", "for", "while", "switch", "try", "do", "return", "co_return", "co_await"}
DECLARATION_KEYWORDS = {"struct", "class", "enum", "union", "namespace", "template", "using",
                        "typedef"}


def scan(text: str):
    """Yields (index, char, in_code) over text, skipping string and character literals and
    comments (in_code is False inside them)."""
    i = 0
    while i < len(text):
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            for j in range(i, end):
                yield j, text[j], False
            i = end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = len(text) if end < 0 else end + 2
            for j in range(i, end):
                yield j, text[j], False
            i = end
            continue
        if c in "\"'":
            j = i + 1
            while j < len(text) and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            for k in range(i, min(j + 1, len(text))):
                yield k, text[k], False
            i = j + 1
            continue
        yield i, c, True
        i += 1


def elide(text: str) -> str:
    """Replaces the `...` that stand for code left out (see the top of this file)."""
    out = list(text)
    code = {i for i, _, in_code in scan(text) if in_code}
    for m in re.finditer(r"\.\.\.", text):
        i = m.start()
        if i not in code:
            continue
        before = text[:i].rstrip(" \t")
        if before and (before[-1].isalnum() or before[-1] == "_"):
            continue  # a pack expansion
        line_start = text.rfind("\n", 0, i) + 1
        line_end = text.find("\n", i)
        line_end = len(text) if line_end < 0 else line_end
        rest = re.sub(r"^\s*(//.*)?$", "", text[i + 3 : line_end])
        if text[line_start:i].strip() == "" and rest == "":
            for j in range(line_start, line_end):
                out[j] = " "
        else:
            out[i : i + 3] = ["{", "}", " "]
    return "".join(out)


@dataclass
class Item:
    kind: str  # "include", "declaration", "statement"
    line: int  # offset of its first line within the block
    text: str


def first_word(text: str) -> str:
    m = re.match(r"\s*([A-Za-z_#][A-Za-z_0-9]*)", text)
    return m.group(1) if m else ""


def classify(text: str) -> str:
    text = "".join(c if in_code else " " for _, c, in_code in scan(text))  # comments out
    word = first_word(text)
    if word.startswith("#"):
        return "include"
    if word in DECLARATION_KEYWORDS or re.fullmatch(r"[A-Z][A-Z0-9_]+", word):
        return "declaration"
    stripped = text.strip()
    if word not in STATEMENT_KEYWORDS and stripped.endswith("}") and not stripped.startswith("{"):
        brace, paren = stripped.find("{"), stripped.find("(")
        if 0 <= paren < brace and "=" not in stripped[:paren]:
            return "declaration"  # a function definition
    return "statement"


def split_items(text: str) -> list[Item]:
    items: list[Item] = []
    start = 0
    depth = 0
    chars = list(scan(text))
    k = 0

    def add(end: int) -> None:
        nonlocal start
        piece = text[start:end]
        if piece.strip():
            blank = re.match(r"(\s*\n)*", piece).group(0)
            offset = text.count("\n", 0, start) + blank.count("\n")
            items.append(Item(classify(piece), offset, piece[len(blank) :].rstrip()))
        start = end

    while k < len(chars):
        i, c, in_code = chars[k]
        k += 1
        if not in_code:
            continue
        at_item_start = text[start:i].strip() == ""
        if c == "#" and at_item_start:
            end = text.find("\n", i)
            add(len(text) if end < 0 else end)
            while k < len(chars) and chars[k][0] < start:
                k += 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and c == ")" and re.match(r"\s*[A-Z][A-Z0-9_]+\s*\(", text[start:i]):
                add(i + 1)  # a macro invocation without a semicolon
            elif depth == 0 and c == "}":
                rest = text[i + 1 :]
                m = re.match(r"\s*(;|else\b|catch\b|while\b|\)|,)", rest)
                if m and m.group(1) == ";":
                    add(i + 1 + m.end())
                    while k < len(chars) and chars[k][0] < start:
                        k += 1
                elif not m:
                    add(i + 1)
        elif c == ";" and depth == 0:
            add(i + 1)
    add(len(text))
    return items


# ---- the g++ 12 pitfall ----------------------------------------------------------------------

AWAITED_TEMPORARY = re.compile(r"[(,]\s*(\{|\[[^\]]*\]\s*[({])")


def awaited_temporaries(block: Block) -> list[str]:
    """The co_await expressions of a block that build a braced list or a lambda."""
    text = "\n".join(block.lines)
    flat = "".join(c if in_code else " " for _, c, in_code in scan(text))
    problems = []
    for m in re.finditer(r"\bco_await\b", flat):
        depth, end = 0, len(flat)
        for j in range(m.end(), len(flat)):
            c = flat[j]
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
                if depth < 0:
                    end = j
                    break
            elif c == ";" and depth == 0:
                end = j
                break
        if AWAITED_TEMPORARY.search(flat, m.end(), end):
            line = block.line + text.count("\n", 0, m.start())
            problems.append(f"{block.source}:{line}: a braced list or a lambda inside co_await, "
                            "which g++ 12 destroys twice: build it in a statement of its own")
    return problems


# ---- writing the translation unit ------------------------------------------------------------


def translation_unit(blocks: list[Block], output: Path) -> str:
    head: list[str] = [
        "// Generated by scripts/doc_examples.py from README.md and the comments of include/dtx:",
        "// every C++ example, compiled (CTest: doc_examples). Do not edit.",
    ]
    includes: list[str] = []
    body: list[str] = []
    out_name = output.as_posix()

    for index, block in enumerate(blocks):
        if block.skipped:
            continue
        text = elide("\n".join(block.lines))
        items = split_items(text)
        declarations = [it for it in items if it.kind == "declaration"]
        statements = [it for it in items if it.kind == "statement"]
        for it in items:
            if it.kind == "include" and it.text.strip() not in includes:
                includes.append(it.text.strip())
        source = (ROOT / block.source).as_posix()

        def emit(item: Item, indent: str) -> None:
            body.append(f'#line {block.line + item.line} "{source}"')
            body.extend(indent + line for line in item.text.split("\n"))
            body.append("#line @NEXT@")

        body.append(f"// {block.where()}")
        body.append(f"namespace dtx_doc::example_{index} {{")
        for it in declarations:
            emit(it, "")
        body.append("asio::awaitable<void> example(DTX_DOC_EXAMPLE_PARAMETERS) {")
        body.append("    {")
        for it in statements:
            emit(it, "        ")
        body.append("    }")
        body.append("    co_return;")
        body.append("}")
        body.append(f"}} // namespace dtx_doc::example_{index}")
        body.append("")

    lines = head + PRELUDE.strip("\n").split("\n") + [""] + includes + [""] + body
    # Point the lines after each example back at the generated file.
    for n, line in enumerate(lines):
        if line == "#line @NEXT@":
            lines[n] = f'#line {n + 2} "{out_name}"'
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the blocks found")
    parser.add_argument("--output", type=Path, help="write the translation unit here")
    args = parser.parse_args()
    blocks = find_blocks()
    if args.list:
        for block in blocks:
            status = "not compiled" if block.skipped else "compiled"
            print(f"{block.where():45} {len(block.lines):3} lines  {status}")
        skipped = sum(block.skipped for block in blocks)
        print(f"{len(blocks)} blocks, {len(blocks) - skipped} compiled, {skipped} not compiled")
    problems = [p for b in blocks if not b.skipped for p in awaited_temporaries(b)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    if args.output:
        text = translation_unit(blocks, args.output.resolve())
        if not args.output.exists() or args.output.read_text(encoding="utf-8") != text:
            args.output.write_text(text, encoding="utf-8")
    if not args.list and not args.output:
        parser.print_usage()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
