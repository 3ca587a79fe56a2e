"""Provider batch jobs: many questions answered by one job of the provider's Batch API.

``ponder batch submit QUESTIONS.jsonl`` turns each line (a question and its sources, the eval
dataset format) into one chat request, uploads them as a JSONL file (the provider's Files API),
creates a batch job (OpenAI's Batch API shape, through litellm's ``create_file`` /
``create_batch`` / ``retrieve_batch`` / ``cancel_batch``), and keeps the job in the run store
(records namespace ``batch``) so ``status``, ``results`` and ``cancel`` work from any process and
a poller killed mid-wait resumes where the store says the job is. Results are downloaded with
:func:`ponder.support.batch.stream_download`, joined on ``custom_id`` (they arrive in any order),
and priced at the provider's batch price; requests in the error file, expired or cancelled are
retried live (at the list price, recorded as such) or listed, never dropped.

Anthropic's Message Batches, which litellm can retrieve but not create or cancel, go through
ponder's own thin client (``anthropic_client``), translated to the same OpenAI shapes; the choice
is made in one place, :func:`ponder.batchjobs.jobs.client_for`.

Modules: ``settings`` (the ``[batch]`` section and the provider target), ``client`` (the
provider's Files and Batch endpoints), ``anthropic_client`` (Anthropic's Message Batches),
``questions`` (questions file -> requests, replies -> answers), ``jobs`` (submit, poll,
results, cancel over the store; which client a target gets), ``ask`` (``ponder ask
--batch``: map_reduce's map phase as one job, its replies handed to the run through the
response cache).

Layer: may import ``errors``, ``support``, ``signatures``, ``context``, ``kernel``, ``engine``
and the first-party plugins' shared prompt helpers (``ponder.plugins._common``,
``_signatures``), so a batch request is the prompt the ``direct`` strategy would send; never
``cli`` or ``testing``. litellm, dspy and httpx are imported inside functions.
"""
