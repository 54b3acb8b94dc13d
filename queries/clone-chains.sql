-- Clones (branches) with their origin snapshot and the dataset that snapshot belongs to.
SELECT node, name AS clone, origin,
       substr(origin, 1, instr(origin, '@') - 1) AS origin_dataset, used
FROM datasets
WHERE origin IS NOT NULL
ORDER BY node, origin
