"""Rules: from the history to alert states, a pure function of its inputs and `now`.

Owns: PromQL (`promql`, over `monitor.history`), where an expression's error is in the file
(`expr`), recording and alerting rules' evaluation and the alert life cycle (`engine`), rule
unit tests in promtool's format (`ruletest`), the Prometheus rule-file export (`export`) and
Alertmanager-style time intervals (`timeintervals`).

May import: `monitor.model`, `monitor.clock`, `monitor.history`, `monitor.config` (`model`, `loader`).
Never `monitor.incidents.lifecycle`, `monitor.delivery`, `monitor.web` or `monitor.cli.main`: the
rules decide what is true, not who hears.
"""
