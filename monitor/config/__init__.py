"""Configuration: `alert_rules.yaml` read into validated, frozen models.

Owns: YAML with positions (`yamlpos`), the building blocks every component's config model uses
(`fields`: durations, strict models, the common check fields), and the loader (`loader`:
`${VAR:-default}` interpolation, the top-level pydantic model, pydantic errors mapped back to
`file:line:col`). Nothing else reads YAML or the environment for configuration.

May import: `monitor.model`, `monitor.secrets`, and each component's own config model (the check
types in `checks`, the receivers in `monitor.delivery`, the rule and time-interval models in
`monitor.rules.engine`): the loader assembles them into one file. `fields` and `yamlpos` import nothing
above `monitor.model`/`monitor.secrets`, so every layer may use them.
"""
