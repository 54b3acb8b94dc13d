# Store stdin as a file, atomically (xfleet/ops/target.py stages target packages with it).
# argv: PATH. Parent directories are created; PATH appears only once it is complete.
mkdir -p -- "$(dirname -- "$1")" && cat > "$1.part" && mv -f -- "$1.part" "$1"
