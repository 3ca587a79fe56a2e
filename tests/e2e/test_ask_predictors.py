"""`ponder ask --predictor …` end to end: switching the predictor changes no strategy code, and
`react` really calls a tool on the loaded sources and answers from its result."""

from __future__ import annotations

import json
from pathlib import Path

from ponder.testing import run_cli

SETTINGS = "HOST = 'localhost'\nDEBUG = False\nMAGIC_PORT = 48213\n"


def project(tmp_path: Path, rules: str, predictor: str) -> tuple[str, str]:
    src = tmp_path / "src"
    (src / "config").mkdir(parents=True)
    (src / "config" / "settings.py").write_text(SETTINGS)
    (src / "app.py").write_text("import settings\nprint(settings.HOST)\n")
    cfg = tmp_path / "ponder.toml"
    cfg.write_text(f'strategy = "direct"\n{predictor}\n'
                   '[adapter]\nname = "scripted"\ncontext_window = 4096\n'
                   f'default = "NOT FOUND"\n{rules}')
    return str(cfg), str(src)


def test_react_calls_a_tool_and_answers_from_its_result(tmp_path):
    # the final answer rule only matches once the tool's observation (the planted line, found
    # by search_context in the loaded files) is in the prompt
    found = r"observation_0 ## \]\]\n[^\[]*config/settings\.py:3: MAGIC_PORT = 48213"
    rules = f'''
[[adapter.rules]]
pattern = 'Your output fields are:\\s*1\\. `reasoning`.*{found}'
[adapter.rules.reply]
reasoning = "the search found it"
answer = "MAGIC_PORT is 48213 (config/settings.py:3)"
[[adapter.rules]]
pattern = '`next_tool_name`.*{found}'
reply = {{ next_thought = "done", next_tool_name = "finish", next_tool_args = {{}} }}
[[adapter.rules]]
pattern = '`next_tool_name`'
[adapter.rules.reply]
next_thought = "search"
next_tool_name = "search_context"
next_tool_args = {{ query = "MAGIC_PORT" }}
'''
    cfg, src = project(tmp_path, rules, '[predictor]\nname = "react"\ntools = ["search_context"]')
    result = run_cli(["--config", cfg, "ask", "Which port?", src, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"] == "MAGIC_PORT is 48213 (config/settings.py:3)"
    assert {"path": "config/settings.py", "line": 3} in data["citations"]
    # every request is a call (issue 15): the agent loop made 3 (search, finish, extract)
    assert data["usage"]["calls"] == 3


def test_chain_of_thought_through_the_cli(tmp_path):
    rules = '''
[[adapter.rules]]
pattern = '`reasoning`'
reply = { reasoning = "line 3 sets it", answer = "48213 (config/settings.py:3)" }
'''
    cfg, src = project(tmp_path, rules, "")
    result = run_cli(["--config", cfg, "ask", "Which port?", src, "--json",
                      "--predictor", "chain_of_thought"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["answer"] == "48213 (config/settings.py:3)"

    plain = run_cli(["--config", cfg, "ask", "Which port?", src, "--json"])
    # the same rules do not match plain predict's prompt (no reasoning field): default reply
    assert "48213" not in json.loads(plain.stdout)["answer"]


def test_unknown_tool_in_config_is_a_clear_error(tmp_path):
    cfg, src = project(tmp_path, "", '[predictor]\nname = "react"\ntools = ["serch_context"]')
    result = run_cli(["--config", cfg, "ask", "Which port?", src])
    assert result.exit_code in (1, 2)
    assert "serch_context" in result.stderr and "search_context" in result.stderr
