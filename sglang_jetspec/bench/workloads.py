"""Benchmark workloads: the bundled held-out prompt sets, a shared-prefix set, and user JSONL
files in the shapes of common evaluation sets.

A workload is a list of `WorkItem`s (a user message, one chat turn). Recognised line shapes,
decided per line from its keys:
  {"prompt": str}                                 plain (this project's prompt files)
  {"question": str, "answer": ...}                GSM8K
  {"problem": str, "solution"|"answer": ...}      MATH-500
  {"task_id": str, "prompt": str, ...}            HumanEval (the prompt is code to complete)
  {"question_id": ..., "turns": [str, ...]}       MT-Bench (the first turn; later turns need
                                                   the model's own first answer)
Bundled names: code, math, chat (data/prompts/<name>.heldout.jsonl: never trained on) and
shared-prefix (several questions about each of a few long documents, so requests share a long
prompt prefix and the radix cache holds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sglang_jetspec.bench.jsonl import read_jsonl

BUNDLED = ("code", "math", "chat", "shared-prefix")
_PROMPTS_DIR = Path(__file__).resolve().parents[2] / "data" / "prompts"

_SHARED_QUESTIONS = (
    "Summarise the passage above in two sentences.",
    "List the three most important facts in the passage above.",
    "Write one quiz question about the passage above and answer it.",
    "Explain the passage above to a beginner.",
)


@dataclass(frozen=True)
class WorkItem:
    id: str
    prompt: str       # the user message (the chat template is applied when it is sent)
    kind: str         # which shape it came from: prompt, gsm8k, math500, humaneval, mtbench, shared


def parse_line(obj: dict, where: str) -> WorkItem:
    """One JSONL object -> WorkItem; an unknown shape is an error naming its keys."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if isinstance(obj.get("turns"), list):
        turns = [t for t in obj["turns"] if isinstance(t, str) and t]
        if not turns:
            raise ValueError(f"{where}: MT-Bench line has no non-empty string in 'turns'")
        return WorkItem(str(obj.get("question_id", where)), turns[0], "mtbench")
    if isinstance(obj.get("task_id"), str) and isinstance(obj.get("prompt"), str):
        return WorkItem(obj["task_id"], "Complete this Python code:\n\n" + obj["prompt"], "humaneval")
    if isinstance(obj.get("problem"), str):
        return WorkItem(str(obj.get("unique_id", where)), obj["problem"], "math500")
    if isinstance(obj.get("question"), str):
        return WorkItem(str(obj.get("id", where)), obj["question"], "gsm8k")
    if isinstance(obj.get("prompt"), str):
        return WorkItem(str(obj.get("id", where)), obj["prompt"], "prompt")
    raise ValueError(f"{where}: unknown line shape with keys {sorted(obj)}; expected one of "
                     "prompt | question (GSM8K) | problem (MATH-500) | task_id+prompt (HumanEval) "
                     "| turns (MT-Bench)")


def read_workload_file(path: str | Path) -> list[WorkItem]:
    items = []
    for where, obj in read_jsonl(path, "workload file"):
        item = parse_line(obj, where)
        if not item.prompt.strip():
            raise ValueError(f"{where}: empty prompt")
        items.append(item)
    if not items:
        raise ValueError(f"workload file {path} holds no prompts")
    return items


def shared_prefix_items(documents: list[str], questions: tuple[str, ...] = _SHARED_QUESTIONS) -> list[WorkItem]:
    """Each document followed by each question, ordered question-major so that concurrent
    requests mostly share a document already in the radix cache."""
    return [WorkItem(f"doc{d}-q{q}", f"{doc}\n\n{question}", "shared")
            for q, question in enumerate(questions) for d, doc in enumerate(documents)]


def _bundled_documents(n: int = 4) -> list[str]:
    """The longest held-out chat prompts' passages (text before their instruction)."""
    passages = []
    for item in read_workload_file(_PROMPTS_DIR / "chat.heldout.jsonl"):
        body = item.prompt.split(":\n\n", 1)
        if len(body) == 2 and len(body[1]) > 200:
            passages.append(body[1])
    passages.sort(key=len, reverse=True)
    if len(passages) < n:
        raise RuntimeError(f"only {len(passages)} long passages in the bundled chat set, need {n}")
    return passages[:n]


def load_workload(spec: str, limit: int | None = None) -> list[WorkItem]:
    """A bundled name (code, math, chat, shared-prefix) or a JSONL path; the first `limit`."""
    if spec == "shared-prefix":
        items = shared_prefix_items(_bundled_documents())
    elif spec in BUNDLED:
        items = read_workload_file(_PROMPTS_DIR / f"{spec}.heldout.jsonl")
    elif spec.endswith(".jsonl") or Path(spec).exists():
        items = read_workload_file(spec)
    else:
        raise ValueError(f"workload {spec!r} is neither a bundled set {list(BUNDLED)} nor a JSONL file")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"prompt limit {limit} must be >= 1")
        items = items[:limit]
    return items


def workload_name(spec: str) -> str:
    return spec if spec in BUNDLED else Path(spec).stem
