-- Per tenant: number of volumes and snapshots, logical vs physical bytes of its volumes.
SELECT tenant,
       count(*) FILTER (WHERE type = 'volume') AS volumes,
       count(*) FILTER (WHERE type = 'snapshot') AS snapshots,
       sum(CASE WHEN type = 'volume' THEN logicalused END) AS logicalused,
       sum(CASE WHEN type = 'volume' THEN used END) AS used
FROM datasets
WHERE tenant IS NOT NULL
GROUP BY tenant
ORDER BY used DESC NULLS LAST
