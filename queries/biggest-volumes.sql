-- The largest volumes by used bytes across the fleet (:limit rows, default 20).
SELECT node, name, tenant, volsize, used, compression, compressratio
FROM datasets
WHERE type = 'volume'
ORDER BY used DESC
LIMIT coalesce(:limit, 20)
