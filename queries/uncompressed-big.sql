-- Volumes with compression off and more than 10 GiB used: candidates for a compression policy.
SELECT node, name, tenant, used, logicalused
FROM datasets
WHERE type = 'volume' AND compression = 'off' AND used > 10737418240
ORDER BY used DESC
