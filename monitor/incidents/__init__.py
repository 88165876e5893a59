"""Incidents: what the rules' transitions mean for people.

Owns: incidents and their timeline (`lifecycle`, `records`, `views`), routing through the
escalation matrix, inhibition and re-notify cadence (`routing`), silences (`silences`), and the
runbook's texts rendered from an incident (`messages`). Every decision takes `now`; SQLite only
records it, and the notifications an incident change causes are written in the same transaction
(`records.enqueue`) for `monitor.delivery` to send.

May import: `monitor.model`, `monitor.clock`, `monitor.secrets`, `monitor.statedb`,
`monitor.config.model`, `monitor.rules.engine`. Never `monitor.delivery`, `monitor.web` or `monitor.cli.main`.
"""
