"""Rules: from samples to alert states, a pure function of its inputs and `now`.

Owns: the expression language (`expr`), evaluation and the alert life cycle (`engine`), rule
unit tests in promtool's format (`ruletest`), the Prometheus rule-file export (`export`) and
Alertmanager-style time intervals (`timeintervals`).

May import: `monitor.model`, `monitor.clock`, `monitor.config` (`model`, `loader`). Never `monitor.incidents.lifecycle`,
`monitor.delivery`, `monitor.web` or `monitor.cli.main`: the rules decide what is true, not who hears.
"""
