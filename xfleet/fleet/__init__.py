"""The fleet: the inventory (which nodes exist, how to reach them) and the connections to them."""
