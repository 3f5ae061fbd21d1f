"""The paper's prompt formats (coda-spec §6.2), post-processing of generations, program assembly.

Chat format (default, as CoDA's lm-eval tasks with `--apply_chat_template` + `gen_prefix`): a user
turn, then a *partial* assistant turn after Qwen3's empty think block that the model continues:
- HumanEval: user "Write a solution ... tests:\\n```{prompt}", assistant prefix
  "Here is the completed function:\\n```python\\n{prompt}\\n"; stop at "\\nclass", "\\ndef", "\\n#",
  "\\nif", "\\nprint"; program = prompt + "\\n" + code (before the next ```), sanitized.
- MBPP: user "You are an expert Python programmer, ... {text} Your code should pass these tests:\\n\\n
  {3 asserts}", assistant prefix "Here is the completed function:\\n```python\\n"; stop "```".
`chat=False` (base models, plain completion): the HumanEval prompt itself; MBPP as a docstring
with the asserts followed by nothing, so the model writes code.
"""

from __future__ import annotations

import ast

from coda_train.eval.datasets import Task

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
MBPP_STOPS = ("```",)
EOS_STRINGS = (IM_END, "<|endoftext|>")


def chat(user: str, assistant_prefix: str) -> str:
    """Qwen3 chat template, continue-final-message, thinking disabled (empty think block)."""
    return (f"{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n<think>\n\n</think>\n\n"
            f"{assistant_prefix}")


def build_prompt(task: Task, *, use_chat: bool = True) -> str:
    """The text given to the model for a generation task (not used for infilling)."""
    if task.style == "humaneval":
        if not use_chat:
            return task.prompt
        return chat("Write a solution to the following problem and make sure that it passes the tests:\n"
                    f"```{task.prompt}", f"Here is the completed function:\n```python\n{task.prompt}\n")
    if task.style == "mbpp":
        tests = "\n".join(task.shown_tests)
        if not use_chat:
            return f'"""\n{task.prompt}\n{tests}\n"""\n'
        return chat(f"You are an expert Python programmer, and here is your task: {task.prompt} "
                    f"Your code should pass these tests:\n\n{tests}",
                    "Here is the completed function:\n```python\n")
    raise ValueError(f"{task.task_id}: style {task.style!r} has no generation prompt")


def cut(text: str, stops: tuple[str, ...]) -> str:
    """Text before the earliest of `stops`."""
    end = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            end = min(end, i)
    return text[:end]


def extract_code(generation: str, task: Task) -> str:
    """Post-processing of lm-eval's CoDA tasks: cut at <|im_end|>, drop an optional leading
    ```python fence, cut at the stop strings, then at the next ```."""
    text = cut(generation, EOS_STRINGS)
    if text.lstrip().startswith("```python\n"):  # a repeated opening fence (the paper would score "")
        text = text.lstrip()[len("```python\n"):]
    text = cut(text, HUMANEVAL_STOPS if task.style == "humaneval" else MBPP_STOPS)
    return cut(text, ("```",))


def sanitize(code: str, entry_point: str = "") -> str:
    """Keep only imports, definitions and assignments at top level (drops stray prints/tests), in the
    spirit of EvalPlus's `sanitize`. Code that does not parse is returned unchanged (it will fail)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
            ast.Assign, ast.AnnAssign)
    lines = code.splitlines()
    parts = [node for node in tree.body if isinstance(node, keep)]
    if entry_point and not any(getattr(n, "name", None) == entry_point for n in parts):
        return code
    out = []
    for node in parts:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        out.append("\n".join(lines[start - 1:node.end_lineno]))
    return "\n".join(out) + "\n"


def program_for(task: Task, completion: str) -> str:
    """The complete test program for one completion (already post-processed / the infilled middle)."""
    if task.style == "humaneval":
        code = sanitize(task.prompt + "\n" + completion, task.entry_point)
        return f"{code}\n\n{task.test}\n\ncheck({task.entry_point})\n"
    if task.style == "mbpp":
        return f"{completion}\n\n{task.test_setup}\n{task.test}\n"
    if task.style == "infill":
        return f"{task.prompt}{completion}{task.suffix}\n\n{task.test}\n\ncheck({task.entry_point})\n"
    raise ValueError(f"unknown task style {task.style!r}")


def oracle_generation(task: Task, *, use_chat: bool = True) -> str:
    """What a perfect model would generate after `build_prompt(task)`: the reference, fenced."""
    if task.style == "humaneval":
        return task.canonical + ("\n```" if use_chat else "")
    if task.style == "mbpp":
        return task.canonical + "\n```"
    return task.canonical


def normalize_ws(text: str) -> str:
    """Whitespace normalisation for infilling exact match: all whitespace runs collapse to one
    space and the ends are stripped (indentation differences are left to the execution check)."""
    return " ".join(text.split())
