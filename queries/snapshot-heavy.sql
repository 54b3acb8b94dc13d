-- Volumes whose snapshots hold the most space (bytes freed if their snapshots were destroyed).
SELECT node, name, tenant, usedbysnapshots, used
FROM datasets
WHERE type = 'volume' AND usedbysnapshots > 0
ORDER BY usedbysnapshots DESC
LIMIT coalesce(:limit, 20)
