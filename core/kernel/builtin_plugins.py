"""What each built-in plugin provides, so the loader imports a built-in only when it is used.

``PROVIDES`` maps an entry-point name (``[project.entry-points.ponder]``) to its module and the
names it registers per kind. The loader declares those names instead of importing the module
(:mod:`ponder.kernel.loader`, "Built-ins load on first use"); a built-in missing here, or whose
module differs, is simply imported at start-up as before, so a new plugin works before this list
knows it. The list is generated from the plugins themselves, never written by hand:

    python -m ponder.kernel.manifest --write    # after adding or renaming a plugin
    python -m ponder.kernel.manifest --check    # exit 1 when it is stale (a test runs it)

A plugin that adds CLI commands is left out (``ponder --help`` must import it to list them).
"""

from __future__ import annotations

# --- generated: do not edit below (python -m ponder.kernel.manifest --write) ---
PROVIDES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    'auto': ('ponder.plugins.auto', {'strategy': ('auto',)}),
    'bm25': ('ponder.plugins.bm25', {'retriever': ('bm25',)}),
    'chain_of_thought': ('ponder.plugins.chain_of_thought', {'predictor': ('chain_of_thought',)}),
    'direct': ('ponder.plugins.direct', {'strategy': ('direct',)}),
    'embeddings': ('ponder.plugins.embeddings', {'retriever': ('embeddings',)}),
    'executor_ray': ('ponder.plugins.executor_ray', {'executor': ('ray',)}),
    'executor_threads': ('ponder.plugins.executor_threads', {'executor': ('threads',)}),
    'exporter_console': ('ponder.plugins.exporter_console', {'exporter': ('console',)}),
    'exporter_jsonl': ('ponder.plugins.exporter_jsonl', {'exporter': ('jsonl',)}),
    'exporter_otlp': ('ponder.plugins.exporter_otlp', {'exporter': ('otlp',)}),
    'follow_up': ('ponder.plugins.follow_up', {'strategy': ('follow_up',)}),
    'gemini': ('ponder.plugins.gemini', {'adapter': ('gemini',)}),
    'hierarchical': ('ponder.plugins.hierarchical', {'strategy': ('hierarchical',)}),
    'iterative': ('ponder.plugins.iterative', {'strategy': ('iterative',)}),
    'litellm': ('ponder.plugins.litellm_adapter', {'adapter': ('litellm',)}),
    'local': ('ponder.plugins.local', {'adapter': ('local',)}),
    'map_reduce': ('ponder.plugins.map_reduce', {'strategy': ('map_reduce',)}),
    'memory': ('ponder.plugins.memory_store', {'storage': ('memory',)}),
    'metric_citations': ('ponder.plugins.metric_citations', {'metric': ('citations',)}),
    'metric_contains': ('ponder.plugins.metric_contains', {'metric': ('contains',)}),
    'metric_exact_match': ('ponder.plugins.metric_exact_match', {'metric': ('exact_match',)}),
    'metric_llm_judge': ('ponder.plugins.metric_llm_judge', {'metric': ('llm_judge',)}),
    'metric_numeric': ('ponder.plugins.metric_numeric', {'metric': ('numeric',)}),
    'metric_token_f1': ('ponder.plugins.metric_token_f1', {'metric': ('token_f1',)}),
    'openai_compatible': ('ponder.plugins.openai_compatible', {'adapter': ('openai_compatible',)}),
    'optimizer_bootstrap_fewshot': (
        'ponder.plugins.optimizer_bootstrap_fewshot',
        {'optimizer': ('bootstrap_fewshot',)},
    ),
    'optimizer_grid': ('ponder.plugins.optimizer_grid', {'optimizer': ('grid',)}),
    'optimizer_mipro': ('ponder.plugins.optimizer_mipro', {'optimizer': ('mipro',)}),
    'optimizer_random': ('ponder.plugins.optimizer_random', {'optimizer': ('random',)}),
    'optimizer_simba': ('ponder.plugins.optimizer_simba', {'optimizer': ('simba',)}),
    'optimizer_tpe': ('ponder.plugins.optimizer_tpe', {'optimizer': ('tpe',)}),
    'predict': ('ponder.plugins.predict', {'predictor': ('predict',)}),
    'react': ('ponder.plugins.react', {'predictor': ('react',)}),
    'retrieve_then_read': (
        'ponder.plugins.retrieve_then_read',
        {'strategy': ('retrieve_then_read',)},
    ),
    'rlm': ('ponder.plugins.rlm', {'strategy': ('rlm',)}),
    'scripted': ('ponder.plugins.scripted', {'adapter': ('scripted',)}),
    'sqlite': ('ponder.plugins.sqlite_store', {'storage': ('sqlite',)}),
    'structured': ('ponder.plugins.structured', {'predictor': ('structured',)}),
    'tools': ('ponder.plugins.tools', {'tool': ('list_files', 'read_lines', 'search_context',)}),
}
# --- end of generated list ---
