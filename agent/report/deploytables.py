"""The report's Deployments section as tables: the DORA four keys per model and for the host,
and every deploy of the window with its outcome, who asked, who approved and its lead time.

The figures come from :mod:`storage.deploykpi` (docs/kpi.md defines them); this module only
lays them out. Actor, approver and the failure's text come from requests and are data: every
renderer escapes them.
"""

from __future__ import annotations

from agent.report.table import Column, Row, Table
from storage.deploykpi import DeployKpis, DoraKeys
from storage.report_model import Report

HOST_ROW = "(all models)"
"""The model cell of the host's row (all models pooled)."""

DEPLOY_NOTE = (
    "Deploys made through Vigil (vigil deploy, vigil rollback, vigil deploy record). "
    "Frequency: promoted changes per day; lead time: the version's files' creation to its "
    "promotion; change-failure rate: changes rolled back, failed, with an incident in their bake "
    "or rolled back by an operator, over finished changes; time to restore: the failure to "
    "service restored. Rollbacks are remedies, not changes; cancelled deploys count nowhere."
)
"""What the keys mean, printed under the table (HTML and Markdown; docs/kpi.md in full)."""


def _keys_row(k: DoraKeys) -> Row:
    return {
        "model": k.model if k.model is not None else HOST_ROW,
        "changes": k.changes,
        "promoted": k.promoted,
        "per_day": k.per_day,
        "lead_time_median_ms": k.lead_time_median_ms,
        "lead_time_p90_ms": k.lead_time_p90_ms,
        "failed_changes": k.failed_changes,
        "change_failure_rate": k.change_failure_rate,
        "time_to_restore_median_ms": k.time_to_restore_median_ms,
        "not_restored": k.not_restored,
        "config_changes": k.config_changes,
        "rollbacks": k.rollbacks,
        "cancelled": k.cancelled,
    }


def deploy_tables(report: Report) -> list[Table]:
    """The four keys (the host's row last) and the deploy list."""
    kpis: DeployKpis = report.deploys
    keys = tuple(_keys_row(k) for k in kpis.models)
    if kpis.models:
        keys += (_keys_row(kpis.host),)
    deploys = tuple(
        {
            "id": r.id,
            "model": r.model,
            "operation": r.operation,
            "strategy": r.strategy,
            "state": r.state,
            "requested_by": r.requested_by,
            "requested_ms": r.requested_ms,
            "approved_by": r.approved_by,
            "finished_ms": r.finished_ms,
            "version_hash": r.version_hash,
            "lead_time_ms": r.lead_time_ms,
            "failure": r.failure,
            "time_to_restore_ms": r.time_to_restore_ms,
            "error": r.error,
        }
        for r in kpis.rows
    )
    t = Column
    return [
        Table(
            "deploy_kpis",
            "Deployment KPIs (DORA four keys)",
            (
                t("model", "Model"),
                t("changes", "Changes", "int"),
                t("promoted", "Promoted", "int"),
                t("per_day", "Per day", "num"),
                t("lead_time_median_ms", "Lead time p50", "ms"),
                t("lead_time_p90_ms", "Lead time p90", "ms"),
                t("failed_changes", "Failed", "int"),
                t("change_failure_rate", "Change-failure rate", "frac"),
                t("time_to_restore_median_ms", "Time to restore p50", "ms"),
                t("not_restored", "Not restored", "int"),
                t("config_changes", "Config changes", "int"),
                t("rollbacks", "Rollbacks", "int"),
                t("cancelled", "Cancelled", "int"),
            ),
            keys,
            empty="no deploys through Vigil in this window",
        ),
        Table(
            "deploys",
            "Deploys",
            (
                t("id", "#", "int"),
                t("model", "Model"),
                t("operation", "Operation"),
                t("state", "Outcome"),
                t("requested_by", "Requested by"),
                t("requested_ms", "Requested", "ts"),
                t("approved_by", "Approved by"),
                t("finished_ms", "Finished", "ts"),
                t("version_hash", "Version", "sha"),
                t("lead_time_ms", "Lead time", "ms"),
                t("failure", "Failed because"),
                t("time_to_restore_ms", "Time to restore", "ms"),
                t("strategy", "Strategy"),
                t("error", "Error"),
            ),
            deploys,
            empty="no deploy was requested or finished in this window",
        ),
    ]
