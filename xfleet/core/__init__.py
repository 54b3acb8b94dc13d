"""Pure code: errors, names, units, YAML sources, and the parsers of ZFS's output. No I/O."""
