"""NVMe-oF access control (docs/access.md): which database host may connect to which volume.

- `initiators`: the initiators' host NQNs, read over SSH from /etc/nvme/hostnqn (one command
  per initiator) and kept in the mirror's `initiators`;
- `attach`: `attach`/`detach` (journaled in `attachments` and `attachment_log`; the volume's
  `xfleet:hosts` property and the target's allowed hosts set in a bounded number of remote
  commands per node, whatever the batch's size) and the `attachments` listing;
- `audit`: every export open to any host, and every drift between the mirror's attachments
  and the target's listing (one listing per node).
"""
