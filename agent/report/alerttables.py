"""The report's Alerting section as tables: alerts per rule, the noisiest rules, deliveries per
channel, each incident's first notification, silences and maintenance windows.

The figures come from :mod:`storage.report_alerting` (docs/kpi.md defines them); this module
only lays them out. Rule names, matchers, authors and comments come from config and operators
and are data: every renderer escapes them.
"""

from __future__ import annotations

from agent.report.table import Column, Table
from storage.report_model import Report


def alert_tables(report: Report) -> list[Table]:
    """The alerting tables, in reading order."""
    al = report.alerting
    alert_rules = tuple(
        {"rule": f.rule, "severity": f.severity, "fired": f.fired} for f in al.by_rule
    )
    noisiest = tuple({"rule": f.rule, "fired": f.fired} for f in al.noisiest)
    pages = tuple(
        {
            "channel": c.channel,
            "delivered": c.delivered,
            "undelivered": c.undelivered,
            "pending": c.pending,
            "last_error": c.last_error,
        }
        for c in al.channels
    )
    first_notifications = tuple(
        {
            "incident_id": f.incident_id,
            "subject": f.subject,
            "kind": f.kind,
            "began_ms": f.began_ms,
            "notified_ms": f.notified_ms,
            "channel": f.channel,
            "latency_ms": f.latency_ms,
        }
        for f in al.first_notifications
    )
    silences = tuple(
        {
            "id": x.id,
            "matchers": x.matchers,
            "starts_ms": x.starts_ms,
            "ends_ms": x.ends_ms,
            "expired_ms": x.expired_ms,
            "author": x.author,
            "comment": x.comment,
        }
        for x in al.silences
    )
    maintenance = tuple(
        {
            "name": m.name,
            "starts_ms": m.starts_ms,
            "ends_ms": m.ends_ms,
            "subjects": m.subjects,
            "incidents": m.incidents,
            "source": m.source,
        }
        for m in al.maintenance
    )
    t = Column  # brevity below
    return [
        Table(
            "alerts",
            "Alerts fired by rule",
            (t("rule", "Rule"), t("severity", "Severity"), t("fired", "Fired", "int")),
            alert_rules,
            empty=al.note or "no alert fired in this window",
        ),
        Table(
            "noisiest_rules",
            "Noisiest rules",
            (t("rule", "Rule"), t("fired", "Fired", "int")),
            noisiest,
            empty="no rule fired in this window",
        ),
        Table(
            "pages",
            "Notifications per channel",
            (
                t("channel", "Channel"),
                t("delivered", "Delivered", "int"),
                t("undelivered", "Undelivered", "int"),
                t("pending", "Pending", "int"),
                t("last_error", "Last error"),
            ),
            pages,
            empty="no notifications in this window",
        ),
        Table(
            "first_notifications",
            "Time from incident to first notification",
            (
                t("incident_id", "Incident #", "int"),
                t("subject", "Subject"),
                t("kind", "Kind"),
                t("began_ms", "Began", "ts"),
                t("notified_ms", "First notified", "ts"),
                t("channel", "Channel"),
                t("latency_ms", "Time to notify", "ms"),
            ),
            first_notifications,
            empty="no unplanned incidents opened in this window",
        ),
        Table(
            "silences",
            "Silences active in the window",
            (
                t("id", "Id"),
                t("matchers", "Matchers"),
                t("starts_ms", "Starts", "ts"),
                t("ends_ms", "Ends", "ts"),
                t("expired_ms", "Expired", "ts"),
                t("author", "Author"),
                t("comment", "Comment"),
            ),
            silences,
            empty="no silences active in this window",
        ),
        Table(
            "maintenance",
            "Maintenance windows",
            (
                t("name", "Window"),
                t("starts_ms", "Starts", "ts"),
                t("ends_ms", "Ends", "ts"),
                t("subjects", "Scope"),
                t("incidents", "Incidents inside", "int"),
                t("source", "Source"),
            ),
            maintenance,
            empty="no maintenance windows in this window",
        ),
    ]
