"""Cost control: budget periods and scopes, cost preflight estimates, calibration and reports."""
