"""Harvest documented functions and module docstrings from the Python standard library.

The standard library is the one large body of real, documented code that is present on every
machine this project runs on, so it seeds the code and prose prompt sets without any download.
The walk is in sorted order and keeps no hash-ordered state, so the same interpreter version
always yields the same list (a different Python version changes the harvest, and the prompts).
"""

from __future__ import annotations

import ast
import os
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Folders that are tests, demos, vendored code or build artefacts rather than library code.
_SKIP_DIRS = {"idlelib", "lib2to3", "turtledemo", "site-packages", "dist-packages", "ensurepip",
              "__pycache__", "lib-dynload", "pydoc_data"}


@dataclass(frozen=True)
class StdlibFunction:
    module: str     # dotted module name, e.g. "json.decoder"
    qualname: str   # "dumps" or "JSONDecoder.decode"
    args: str       # the parameter list as written, e.g. "obj, *, skipkeys=False"
    doc: str        # cleaned docstring
    source: str     # full source of the def, docstring included
    body: str       # the def with its docstring removed

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def is_method(self) -> bool:
        return "." in self.qualname


@dataclass(frozen=True)
class StdlibModuleDoc:
    module: str
    doc: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _module_files(root: Path) -> list[tuple[str, Path]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in _SKIP_DIRS and not d.startswith(("test", "config-")))
        rel = Path(dirpath).relative_to(root)
        for fn in sorted(filenames):
            if not fn.endswith(".py") or fn.startswith("test"):
                continue
            parts = list(rel.parts) + ([] if fn == "__init__.py" else [fn[:-3]])
            if parts:
                out.append((".".join(parts), Path(dirpath) / fn))
    return out


def _def_source(fn: ast.FunctionDef, lines: list[str], drop_docstring: bool = False) -> str:
    """The def's source, dedented to column 0; optionally with its docstring statement cut out.

    Slices the file's lines directly: ``ast.get_source_segment`` re-splits the whole file on
    every call, which made the walk quadratic (minutes instead of seconds).
    """
    first, last = fn.lineno - 1, fn.end_lineno  # 0-based, end exclusive; decorators excluded
    if drop_docstring:
        doc = fn.body[0]
        if len(fn.body) < 2 or doc.lineno == fn.lineno:
            return ""
        picked = lines[first:doc.lineno - 1] + lines[doc.end_lineno:last]
    else:
        picked = lines[first:last]
    col = fn.col_offset
    out = []
    for line in picked:
        if not line.strip():
            out.append("\n")
        elif line[:col].isspace() or col == 0:
            out.append(line[col:])
        else:  # less indented than the def: text inside a multi-line string, keep as written
            out.append(line)
    return "".join(out)


def _functions_in(module: str, tree: ast.Module, lines: list[str]) -> list[StdlibFunction]:
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            doc = ast.get_docstring(node)
            if doc:
                found.append(StdlibFunction(module, prefix + node.name, ast.unparse(node.args), doc,
                                            _def_source(node, lines), _def_source(node, lines, True)))

    for node in tree.body:
        visit(node, "")
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for sub in node.body:
                visit(sub, node.name + ".")
    return found


@lru_cache(maxsize=2)
def _harvest(root: str) -> tuple[tuple[StdlibFunction, ...], tuple[StdlibModuleDoc, ...]]:
    funcs: list[StdlibFunction] = []
    docs: list[StdlibModuleDoc] = []
    for module, path in _module_files(Path(root)):
        src = path.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(src)
        except SyntaxError:  # a few files target other grammars on purpose
            continue
        mdoc = ast.get_docstring(tree)
        if mdoc and not module.split(".")[-1].startswith("_"):
            docs.append(StdlibModuleDoc(module, mdoc))
        funcs.extend(_functions_in(module, tree, src.splitlines(keepends=True)))
    return tuple(funcs), tuple(docs)


def stdlib_functions(root: str | Path | None = None) -> list[StdlibFunction]:
    """Public functions and methods with a docstring, in module order (about 4K on Python 3.11)."""
    return list(_harvest(str(root or stdlib_root()))[0])


def stdlib_module_docs(root: str | Path | None = None) -> list[StdlibModuleDoc]:
    """Public modules with a module docstring (about 400 on Python 3.11)."""
    return list(_harvest(str(root or stdlib_root()))[1])


def paragraphs(doc: str, min_chars: int = 0) -> list[str]:
    """Blank-line separated paragraphs of a docstring, each joined onto one line of prose."""
    out = []
    for block in doc.split("\n\n"):
        text = " ".join(line.strip() for line in block.strip().splitlines())
        if len(text) >= min_chars:
            out.append(text)
    return out
