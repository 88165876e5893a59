"""The BFF's JSON logs as a check: follow, parse, normalize, tally, window.

Owns: following files across rotation (`tail`), parsing chunks of lines (`parse`), normalizing
raw values (`normalize`), grouping parsed records into counts (`tally`), the sliding window that
becomes metrics (`window`) and the check itself (`check`).

May import: `monitor.model`, `monitor.secrets`, `monitor.clock`, `monitor.config.fields`; never
the rules, incidents, delivery or web layers.
"""
