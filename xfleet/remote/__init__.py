"""Reaching a node: the Transport base, local and SSH transports, ssh config, host keys, the
relay of send streams, and the remote programs xfleet runs on nodes (xfleet/remote/programs/)."""
