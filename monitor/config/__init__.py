"""Configuration: `alert_rules.yaml` read into validated, frozen models.

Owns: YAML with positions (`yamlpos`), the building blocks every component's config model uses
(`fields`: durations, strict models, the common check fields), the file's own models and the
loaded `Config` value (`model`), and the loader (`loader`: `${VAR:-default}` interpolation,
pydantic errors mapped back to `file:line:col`). Nothing else reads YAML or the environment
for configuration. Which values are secret is `monitor.secrets`.

May import: `monitor.model`, `monitor.secrets`, and each component's own config model (the check
types in `checks`, the receivers in `monitor.delivery`, the time-interval model in
`monitor.rules.timeintervals`): `model` assembles them into one file. `fields` and `yamlpos` import nothing
above `monitor.model`/`monitor.secrets`, so every layer may use them.
"""
