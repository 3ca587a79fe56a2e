"""A pipeline over the known quality landscape, for tests of ``ponder optimize --pipeline``.

:mod:`ponder.testing.landscape` answers right only at a low temperature and when a prompt holds
the whole fact. :data:`PIPELINE` runs two stages over it: ``find`` (``map_reduce``, its
``settings.chunk_tokens = 400`` too small for one chunk to hold both lines of the fact) and
``report`` (``predict`` over find's answer, the pipeline's output). With the base config's
``temperature = 0.0`` the report is right exactly when find's ``chunk_tokens >= 1400`` and
report's own ``adapter.temperature <= 0.3``: :func:`good_stage_point` over :data:`STAGE_SPACE`
(110 points, 16 of them good). :func:`write_pipeline_landscape` writes the corpus, the dataset,
the pipeline, the space and a ponder.toml for a fake provider's URL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ponder.testing.landscape import write_landscape_corpus

PIPELINE = """
[pipeline]
name = "port"
output = "report.answer"

[[pipeline.stages]]
name = "find"
uses = "map_reduce"
inputs = { question = "${input.question}" }
settings = { chunk_tokens = 400 }

[[pipeline.stages]]
name = "report"
uses = "predict"
signature = "question, finding -> answer"
inputs = { question = "${input.question}", finding = "${find.answer}" }
"""

STAGE_SPACE = """
[optimize.space]
"pipeline.stages.find.settings.chunk_tokens" = { int = [200, 2000], step = 200 }
"pipeline.stages.report.adapter.temperature" = { float = [0.0, 1.0], step = 0.1 }
"""

QUESTIONS = ["Which port does the service use?", "What port is LANDSCAPE_KEY?",
             "Name the service port.", "Which port is configured?", "What is the port?"]

CHUNK = "pipeline.stages.find.settings.chunk_tokens"
TEMPERATURE = "pipeline.stages.report.adapter.temperature"


def good_stage_point(assignment: Mapping[str, Any]) -> bool:
    """Whether a point of :data:`STAGE_SPACE` answers right (see the module docstring)."""
    return assignment[CHUNK] >= 1400 and assignment[TEMPERATURE] <= 0.3


def write_pipeline_landscape(work: str | Path, base_url: str, *, answer: str = "48213") -> Path:
    """``work/``: ``corpus/service.txt``, ``qa.jsonl`` (five questions), ``port.toml`` (the
    pipeline), ``space.toml`` (:data:`STAGE_SPACE`) and ``ponder.toml`` (the fake provider at
    ``base_url``, temperature 0.0, priced, response cache off, a SQLite run store)."""
    work = Path(work)
    write_landscape_corpus(work / "corpus", answer=answer)
    rows = [json.dumps({"id": str(i), "question": q, "sources": ["corpus/service.txt"],
                        "answer": answer}) for i, q in enumerate(QUESTIONS)]
    (work / "qa.jsonl").write_text("\n".join(rows) + "\n")
    (work / "port.toml").write_text(PIPELINE)
    (work / "space.toml").write_text(STAGE_SPACE)
    (work / "ponder.toml").write_text(f"""
[adapter]
name = "openai_compatible"
base_url = "{base_url}"
model = "fake"
temperature = 0.0
context_window = 8192
input_cost_per_token = 0.000001
output_cost_per_token = 0.000002

[cache]
enabled = false

[storage]
name = "sqlite"
path = "{work / 'runs.sqlite'}"
""")
    return work
