"""Developer tools that are not shipped with xfleet: fixture capture from the lab, its scenario,
and the hostile property values (run from the repository root, e.g. `python -m tools.capture`)."""
