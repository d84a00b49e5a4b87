"""The alerting part of the config: plain data and its validation, below ``agent.alerting``.

The rule model (:mod:`.rules`, the series :mod:`.catalog`, summary :mod:`.templates`, the
:mod:`.builtin` rules), maintenance :mod:`.windows` (with :mod:`.cron`), label matchers and
:mod:`.routes`, and each channel kind's settings (:mod:`.channels`) live here rather than in
``agent.alerting`` because the layers contract puts the config below the alerting room: the
schema must build and check ``[[alert]]``, ``[[notify]]`` and ``[[maintenance]]`` tables, with
errors naming file, line and field, without importing the engine, the outbox or any channel's
network library. ``agent.alerting`` imports them from here (and re-exports the names it always
offered). The file's own shape for these tables is :mod:`.tables`; turning tables into these
records, :mod:`.build`.
"""
