-- Nodes whose last sync failed: their rows are last-known values. Age in seconds.
SELECT name, kind, address, last_error,
       round(unixepoch('now') - last_success) AS age_seconds
FROM nodes
WHERE stale = 1
ORDER BY name
