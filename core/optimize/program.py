"""The best candidate of a study as a *program*: a TOML file that layers over a config.

Why the assignment and not the whole resolved config: the resolved config holds the machine's
own settings (base URLs, key references, paths) and its secrets are masked in the store, so a
program that replaced it would not run anywhere else. A program is the keys the study chose
(``[strategy] chunk_tokens = 1600``, ``[adapter] temperature = 0.1``) plus, under
``[optimize.program]``, where it came from: study, trial, dataset and its digest, metric, the
val score and the baseline's. It is a valid ponder config file itself (``[optimize]`` is a
subsystem section the kernel keeps raw), so ``ponder --config best.toml ask …`` works as well as
``ponder ask --program best.toml …``. The masked resolved config is kept in the store's record
(namespace ``study``, key ``<study>/program``) for the record, never executed.

A program stored under a study's name is the artifact ``("program", <study>)`` in the run store.

**A pipeline's program** (a study with ``--pipeline``) also holds the resolved pipeline, the
trial's stage values applied, as ``[pipeline]`` and its ``[[pipeline.stages]]``: the file is a
pipeline file itself, so ``ponder pipeline run best.toml SOURCES --input question=…`` runs the
best pipeline (and ``--config best.toml`` adds the program's other keys). ``ponder ask
--program`` layers the other keys only: ``ask`` runs a strategy, not a pipeline.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.kernel.render import toml_key, toml_value

ARTIFACT_KIND = "program"
PIPELINE_SECTION = "pipeline"


def render_program(overrides: list[tuple[str, Any]], provenance: Mapping[str, Any],
                   prompts: Mapping[str, str] | None = None, pipeline: Any = None) -> str:
    """The program's TOML text: the overrides by section, ``[optimize.program]``, the compiled
    predictor state ``[optimize.prompts]`` (signature name = DSPy JSON state), then the
    resolved ``pipeline`` (a :class:`ponder.pipeline.model.Pipeline`) when there is one."""
    sections: dict[str, dict[str, Any]] = {}
    # a plugin's name before its settings: choosing a plugin drops settings set before it
    overrides = [(k, v) for k, v in overrides if k.split(".")[0] != PIPELINE_SECTION]
    for dotted, value in sorted(overrides, key=lambda kv: not kv[0].endswith(".name")):
        section, _, key = dotted.partition(".")
        sections.setdefault(section, {})[key] = value
    use = ("run its pipeline with `ponder pipeline run FILE SOURCES --input question=...` "
           "(--config FILE adds its other keys)") if pipeline is not None else \
        "layer it over a config with `ponder ask --program FILE` (or use it as --config)"
    lines = [f"# ponder program: study {provenance.get('study')}, trial "
             f"{provenance.get('trial')}; {use}", ""]
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in values.items())
        lines.append("")
    lines.append("[optimize.program]")
    for key, value in provenance.items():
        if value is not None:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    if prompts:
        lines += ["", "# the compiled predictor state: per signature, DSPy's JSON state of its",
                  "# predictor (demos, instructions); applied as each module is built",
                  "[optimize.prompts]"]
        lines.extend(f"{toml_key(name)} = {toml_value(text)}"
                     for name, text in sorted(prompts.items()))
    if pipeline is not None:
        lines += ["", "# the pipeline with the trial's stage values: `ponder pipeline run` this "
                  "file", pipeline.to_toml().rstrip("\n")]
    return "\n".join(lines) + "\n"


def save_program(storage: Any, study: str, text: str, record: Mapping[str, Any]) -> None:
    storage.put_artifact(ARTIFACT_KIND, study, text.encode())
    storage.put_record("study", f"{study}/program", dict(record))


def read_program(name_or_file: str, storage: Any = None) -> tuple[str, str]:
    """``(toml text, where)`` of a program file, or of the program stored for a study."""
    path = Path(name_or_file)
    if path.is_file():
        return path.read_text(), str(path)
    data = None
    if storage is not None:
        data = storage.get_artifact(ARTIFACT_KIND, name_or_file)
    if data is None:
        raise ConfigError(f"--program {name_or_file}: no such file and no program stored for a "
                          "study of that name (`ponder optimize show STUDY` lists a study)")
    return data.decode(), f"program {name_or_file}"


def program_overrides(name_or_file: str, storage: Any = None) -> list[tuple[tuple[str, ...], Any,
                                                                             str]]:
    """The program's keys as config overrides ``(path, value, origin)``, its provenance left
    out. Without ``storage`` a name is looked up in the default run store."""
    if storage is None and not Path(name_or_file).is_file():
        storage = _default_storage()
    text, where = read_program(name_or_file, storage)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    origin = f"--program {name_or_file}"
    out: list[tuple[tuple[str, ...], Any, str]] = []
    for section, values in data.items():
        if section == PIPELINE_SECTION:
            continue  # for `ponder pipeline run FILE`; ask runs a strategy (module docstring)
        if section == "optimize":
            # the compiled predictor state travels; the provenance is for the record only
            prompts = values.get("prompts") if isinstance(values, Mapping) else None
            for name, text in sorted((prompts or {}).items()):
                out.append((("optimize", "prompts", name), text, origin))
            continue
        if not isinstance(values, Mapping):
            out.append(((section,), values, origin))
            continue
        for key, value in sorted(values.items(), key=lambda kv: kv[0] != "name"):
            out.append(((section, key), value, origin))
    return out


def _default_storage() -> Any:
    from ponder.engine.system import System
    from ponder.kernel.config import load_config

    system = System(load_config())
    return system.open_storage() or system.build("storage", "sqlite")
