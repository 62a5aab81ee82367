"""`roitrack alerts`: rules over the roi-updates topic that fire and resolve alerts.

The package is split by concept:

- ``rules``: the rule models and the rules-file loader;
- ``evaluate``: pure functions that decide whether one update breaches a rule;
- ``state``: the per rule, campaign and window state machine (fire, cool-down, resolve) and stable ids;
- ``messages``: the Alert record with its English and Dutch summaries;
- ``engine``: stale-update filtering and rule evaluation over a batch, in memory;
- ``store``: the Redis keys of the state and of the outbox;
- ``sinks``: the alerts topic, standard output and webhooks;
- ``consumer``: the Kafka loop that ties them together, and its recovery rule.
"""

from roitrack.alerts.consumer import AlertsError, default_group, run_alerts
from roitrack.alerts.rules import RulesError, RuleSet, load_rules

__all__ = ["AlertsError", "RuleSet", "RulesError", "default_group", "load_rules", "run_alerts"]
