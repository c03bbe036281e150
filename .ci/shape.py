"""Code shape the project holds itself to: no function over 60 lines, run/runner.py under 500.

Run by .ci/run after the linters; prints each offender and exits 1 if there is one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FUNCTION = 60
# The one orchestrator (its entry, its collaborators wired once, its workers) stays one
# module; the ceiling is against it growing rules that belong in the layers below.
LIMITS = {"batchgen/run/runner.py": 500}

root = Path(__file__).resolve().parent.parent
problems = []
for path in sorted((root / "batchgen").rglob("*.py")):
    text = path.read_text()
    name = str(path.relative_to(root))
    if (limit := LIMITS.get(name)) is not None and len(text.splitlines()) >= limit:
        problems.append(f"{name}: {len(text.splitlines())} lines, the limit is under {limit}")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION:
                problems.append(f"{name}:{node.lineno}: {node.name} is {lines} lines (at most {MAX_FUNCTION})")
print("\n".join(problems) or "code shape: ok")
sys.exit(1 if problems else 0)
