-- Per tenant: number of volumes and snapshots, logical vs physical bytes of its volumes.
SELECT tenant,
       sum(type = 'volume') AS volumes,
       sum(type = 'snapshot') AS snapshots,
       sum(CASE WHEN type = 'volume' THEN logicalused END) AS logicalused,
       sum(CASE WHEN type = 'volume' THEN used END) AS used
FROM datasets
WHERE tenant IS NOT NULL
GROUP BY tenant
ORDER BY used DESC
