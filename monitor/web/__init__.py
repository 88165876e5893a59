"""The HTTP side: `/metrics`, `/-/healthy`, `/-/ready`, `/-/reload`, the JSON API and the status page.

Owns: the aiohttp application and its routes (`server`, `api`), the one Collector over the
store (`metrics`), the server-rendered status page (`statuspage`), the incident page and
sign-in (`pages` for the routes and sessions' use, `incidentpage` for the HTML, `auth` for
tokens and session cookies).

May import anything below it (`monitor.model`, `monitor.config.model`, `monitor.store`,
`monitor.scheduler`, `monitor.rules.engine`, `monitor.incidents.lifecycle`, `monitor.delivery`, `monitor.alerting`).
Never `monitor.cli.main` or `monitor.daemon`: the daemon wires the web side, not the other way round.
"""
